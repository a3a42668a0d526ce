#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The Docker client against a real private dockerd, and its load watchdog
//! against a daemon that stops reading.
//!
//! Needs root and Debian's docker.io (`.ci/deps` installs it).

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use flypack_engine::docker;
use sha2::{Digest, Sha256};

fn links() -> String {
    let o = Command::new("ip").args(["-br", "link"]).output().unwrap();
    let mut v: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| l.split_whitespace().next().unwrap_or("").to_string())
        .collect();
    v.sort();
    v.join(" ")
}

/// A `docker save` archive holding one image of one layer; returns its id.
fn archive(path: &Path, reference: &str) -> String {
    let mut layer = tar::Builder::new(Vec::new());
    let data = b"flypack engine test\n";
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    layer.append_data(&mut h, "hello.txt", &data[..]).unwrap();
    let layer = layer.into_inner().unwrap();
    let diff = hex::encode(Sha256::digest(&layer));
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux", "created": "1970-01-01T00:00:00Z",
        "config": {},
        "rootfs": { "type": "layers", "diff_ids": [format!("sha256:{diff}")] },
    }))
    .unwrap();
    let id = hex::encode(Sha256::digest(&config));
    let manifest = serde_json::to_vec(&serde_json::json!([{
        "Config": format!("{id}.json"), "RepoTags": [reference], "Layers": [format!("{diff}/layer.tar")],
    }]))
    .unwrap();
    let mut t = tar::Builder::new(std::fs::File::create(path).unwrap());
    for (name, bytes) in [
        ("manifest.json".to_string(), manifest),
        (format!("{id}.json"), config),
        (format!("{diff}/layer.tar"), layer),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        t.append_data(&mut h, name, bytes.as_slice()).unwrap();
    }
    t.into_inner().unwrap().flush().unwrap();
    format!("sha256:{id}")
}

#[test]
fn a_private_daemon_loads_an_archive_and_leaves_the_host_network_alone() {
    let dir = tempfile::tempdir().unwrap();
    let before = links();
    let daemon = docker::Daemon::start(&dir.path().join("data"), Duration::from_secs(120)).unwrap();
    let a = dir.path().join("img.tar");
    let id = archive(&a, "flypack/engine-test:1");
    let mut calls = 0;
    flypack_engine::rt::block_on(async {
        let d = docker::connect(Some(daemon.socket()), Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(docker::image_id(&d, "flypack/engine-test:1").await.unwrap(), None);
        docker::load_archive(&d, &a, docker::STALL, &mut |p| {
            calls += 1;
            assert!(p.sent <= p.total, "{p:?}");
        })
        .await
        .unwrap();
        assert_eq!(
            docker::image_id(&d, "flypack/engine-test:1").await.unwrap(),
            Some(id.clone())
        );
    })
    .unwrap();
    assert!(calls >= 1, "no progress reported");
    daemon.stop().unwrap();
    assert!(
        dir.path()
            .join("data/image/overlay2/imagedb/content/sha256")
            .join(&id[7..])
            .is_file()
    );
    assert_eq!(links(), before, "the private daemon changed the host's network links");
}

#[test]
fn a_load_that_stops_moving_fails_after_the_stall_period_and_not_before() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("stuck.sock");
    // A "daemon" that accepts and never reads: the upload stops moving once
    // the socket buffers are full.
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let held = std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        std::thread::sleep(Duration::from_secs(30));
        drop(conn);
    });
    let a = dir.path().join("big.tar");
    let mut f = std::fs::File::create(&a).unwrap();
    let chunk = vec![0x5au8; 1 << 20];
    for _ in 0..32 {
        f.write_all(&chunk).unwrap();
    }
    drop(f);
    let d = bollard::Docker::connect_with_unix(&sock.display().to_string(), 120, bollard::API_DEFAULT_VERSION).unwrap();
    let t0 = Instant::now();
    let err = flypack_engine::rt::block_on(docker::load_archive(&d, &a, Duration::from_secs(3), &mut |_| {}))
        .unwrap()
        .unwrap_err();
    let took = t0.elapsed();
    let msg = format!("{err:#}");
    let idle: u64 = msg
        .split("made no progress for ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{msg}"));
    // Checked every 2 s: the stall is seen between 3 and 5 s without progress.
    assert!((3..=5).contains(&idle), "{msg}");
    assert!(msg.contains("of 33554432 bytes sent"), "{msg}");
    // Bounded by progress: it waited the stall period, not a request timeout.
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(20),
        "{took:?}"
    );
    drop(held);
}
