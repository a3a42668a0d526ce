//! Flypack's engines: the work builder, firstboot and the tests share that
//! is not a contract (the contracts live in `flypack-contracts`).

pub mod backup;
pub mod beneath;
pub mod compose;
pub mod docker;
pub mod flash;
pub mod man;
pub mod pki;
pub mod rt;
