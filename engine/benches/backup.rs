#![allow(clippy::unwrap_used)]
//! Backup and restore of about 1 GiB of volume data, encrypted (age to the
//! fleet's recipient, HMAC-tagged: what units write) against the same
//! pipeline without the age layer, in one run. Prints figures; asserts
//! nothing. Goal (issue 8): encrypted at most 1.2x plaintext.
//!
//!     cargo bench -p flypack-engine --bench backup [-- ROUNDS]
//!
//! The data is incompressible (like VictoriaMetrics's own compressed
//! parts), so zstd cannot hide the cost of the cipher.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

use flypack_engine::backup::{self, FleetKey, Keys, Manifest, Writer};
use flypack_engine::beneath::Beneath;

fn data(dir: &Path) {
    let mut x: u64 = 0x9e3779b97f4a7c15;
    let mut buf = vec![0u8; 16 << 20];
    for i in 0..64 {
        for c in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            c.copy_from_slice(&x.to_le_bytes()[..c.len()]);
        }
        std::fs::write(dir.join(format!("part-{i:02}")), &buf).unwrap();
    }
}

fn manifest() -> Manifest {
    let mut m = Manifest {
        schema: backup::SCHEMA,
        image: "flypack".into(),
        hostname: "bench".into(),
        created: "2026-11-28T00:00:00Z".into(),
        version: "bench".into(),
        volumes: Default::default(),
        entries: vec![],
    };
    m.volumes.insert("vm-data".into(), "copied".into());
    m
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let rounds: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(3);
    let work = tempfile::tempdir_in("/var/tmp").unwrap();
    let src = work.path().join("vm-data");
    std::fs::create_dir_all(&src).unwrap();
    data(&src);
    let key = FleetKey::generate("2026-11-28T00:00:00Z").unwrap();
    let unit = key.unit_part();
    let (mut bp, mut be, mut rp, mut re) = (vec![], vec![], vec![], vec![]);
    for _ in 0..rounds {
        for sealed in [false, true] {
            let out = work.path().join(if sealed { "b.age" } else { "b.tar.zst" });
            let t = Instant::now();
            let f = std::io::BufWriter::new(File::create(&out).unwrap());
            let mut w = if sealed {
                Writer::new(f, &unit).unwrap()
            } else {
                Writer::new_decrypted(f, key.auth()).unwrap()
            };
            w.add_path(&src, "volumes/vm-data", false).unwrap();
            let (mut f, _) = w.finish(manifest()).unwrap();
            f.flush().unwrap();
            f.into_inner().unwrap().sync_all().unwrap();
            let secs = t.elapsed().as_secs_f64();
            if sealed { &mut be } else { &mut bp }.push(secs);
            // Restore: verify everything, then extract beneath a folder.
            let dest = work.path().join("restored");
            let _ = std::fs::remove_dir_all(&dest);
            std::fs::create_dir_all(&dest).unwrap();
            let keys = if sealed {
                Keys::fleet(std::slice::from_ref(&key))
            } else {
                Keys::unit(&unit)
            };
            let t = Instant::now();
            backup::extract(&out, &keys, "volumes/vm-data", &Beneath::open(&dest).unwrap()).unwrap();
            let secs = t.elapsed().as_secs_f64();
            if sealed { &mut re } else { &mut rp }.push(secs);
            std::fs::remove_file(&out).unwrap();
        }
    }
    let gib = 1.0;
    let (bp, be, rp, re) = (median(bp), median(be), median(rp), median(re));
    println!("backup of {gib:.0} GiB (64 incompressible files), median of {rounds} rounds:");
    println!(
        "  write   plaintext {bp:6.2} s   encrypted {be:6.2} s   ratio {:.2}x",
        be / bp
    );
    println!(
        "  restore plaintext {rp:6.2} s   encrypted {re:6.2} s   ratio {:.2}x   (verify pass + extract pass, digests checked)",
        re / rp
    );
    println!("goal: encrypted <= 1.2x plaintext");
}
