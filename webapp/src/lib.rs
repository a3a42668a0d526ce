//! flypack-web: the unit's web app.
//!
//! A phone on the venue LAN sees whether the unit is GO, what its links, SRT
//! streams and multicast groups are doing right now, and why it is NO-GO;
//! and acts: re-runs QA, takes a backup, restarts a stack service, runs an
//! allowed Ansible job. Everything is served over TLS (rustls), behind local
//! users with roles (viewer < operator < engineer < admin).
//!
//! The flow: [`cli`] → [`cmd`] → [`server`] (listeners, TLS) → [`routes`]
//! (the one route table, with each route's role) → [`pages`] and the
//! engines: [`live`] (the 1-second sampler and its fan-out), [`jobs`] (every
//! process the app starts: firstboot actions and ansible-runner), [`proxy`]
//! (VictoriaMetrics, vmui, Grafana). Boundaries: [`procfs`] (/proc and
//! /sys), [`prom`] (the exporter's text), [`tls`] (certificates).

pub mod actions;
pub mod alerts;
pub mod assets;
pub mod audit;
pub mod cli;
pub mod cmd;
pub mod config;
pub mod enrol;
pub mod fleet;
pub mod jobs;
pub mod live;
pub mod pages;
pub mod paths;
pub mod plain;
pub mod privileged;
pub mod procfs;
pub mod prom;
pub mod proxy;
pub mod ratelimit;
pub mod role;
pub mod rotate;
pub mod routes;
pub mod security;
pub mod server;
pub mod session;
pub mod state;
pub mod tls;
pub mod users;

pub use users::hash_password;

/// This crate's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
