use super::*;
use crate::users::{Users, hash_password};

fn write(dir: &Path, text: &str) -> std::path::PathBuf {
    let p = dir.join("web-users.toml");
    std::fs::write(&p, text).unwrap();
    p
}

fn config() -> crate::config::Config {
    crate::config::Config::load(Path::new("/nonexistent"), None).unwrap()
}

fn file(users: &[(&str, &str, &str)], retire: &[&str]) -> String {
    let mut t = format!("version = 1\nretire = {retire:?}\n");
    for (n, r, h) in users {
        t.push_str(&format!(
            "[[users]]\nname = {n:?}\nrole = {r:?}\npassword_hash = {h:?}\n"
        ));
    }
    t
}

#[test]
fn applies_adds_updates_retires_and_a_second_run_changes_nothing() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("root");
    let users = Users::load(&root).unwrap();
    users.add("ana", Role::Admin, "old password one").unwrap();
    users.add("bo", Role::Viewer, "old password two").unwrap();
    users.add("cy", Role::Operator, "old password three").unwrap();
    let sessions = crate::session::Sessions::load(&root, 3600, 3600).unwrap();
    let (ana_tok, _) = sessions.create("ana");
    let (bo_tok, _) = sessions.create("bo");
    let (cy_tok, _) = sessions.create("cy");
    let new_ana = hash_password("new password one");
    let dee = hash_password("dee's password");
    let bo_hash = users.get("bo").unwrap().password_hash;
    let f = write(
        d.path(),
        &file(
            &[
                ("ana", "admin", &new_ana),
                ("bo", "engineer", &bo_hash),
                ("dee", "viewer", &dee),
            ],
            &["cy", "nobody"],
        ),
    );

    let planned = apply(&root, &config(), &f, true).unwrap();
    assert_eq!(planned.len(), 4, "{planned:?}");
    assert_eq!(Users::load(&root).unwrap().list().len(), 3, "--check changes nothing");

    let done = apply(&root, &config(), &f, false).unwrap();
    assert_eq!(
        done,
        vec![
            Change::Removed("cy".into()),
            Change::Updated("ana".into(), vec!["password"]),
            Change::Updated("bo".into(), vec!["role"]),
            Change::Added("dee".into()),
        ]
    );
    let after = Users::load(&root).unwrap();
    let names: Vec<String> = after.list().into_iter().map(|u| u.name).collect();
    assert_eq!(names, ["ana", "bo", "dee"]);
    assert!(matches!(
        after.check_login("ana", "new password one", ""),
        crate::users::LoginCheck::Ok(_)
    ));
    assert_eq!(
        after.check_login("ana", "old password one", ""),
        crate::users::LoginCheck::Wrong
    );
    assert_eq!(after.get("bo").unwrap().role, Role::Engineer);
    // Every changed or retired user's sessions ended.
    let s = crate::session::Sessions::load(&root, 3600, 3600).unwrap();
    for t in [&ana_tok, &bo_tok, &cy_tok] {
        assert!(s.get(t).is_none());
    }

    assert!(apply(&root, &config(), &f, false).unwrap().is_empty(), "second run");
}

#[test]
fn refuses_while_the_web_app_serves_and_when_no_admin_would_be_left() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("root");
    Users::load(&root)
        .unwrap()
        .add("ana", Role::Admin, "old password one")
        .unwrap();
    let f = write(d.path(), &file(&[], &["ana"]));
    let e = apply(&root, &config(), &f, false).unwrap_err().to_string();
    assert!(e.contains("no admin"), "{e}");

    let f = write(
        d.path(),
        &file(&[("bo", "viewer", &hash_password("bo's password"))], &[]),
    );
    let held = take_serve_lock(&root, "serving").unwrap();
    assert_eq!(
        apply(&root, &config(), &f, true).unwrap(),
        vec![Change::Added("bo".into())],
        "a check reads only, with the web app serving"
    );
    let e = format!("{:#}", apply(&root, &config(), &f, false).unwrap_err());
    assert!(
        e.contains("the web app is running") && e.contains("systemctl stop flypack-web"),
        "{e}"
    );
    drop(held);
    assert_eq!(
        apply(&root, &config(), &f, false).unwrap(),
        vec![Change::Added("bo".into())]
    );
}

#[test]
fn a_hostile_file_is_refused_with_the_reason_and_nothing_changes() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("root");
    Users::load(&root)
        .unwrap()
        .add("ana", Role::Admin, "old password one")
        .unwrap();
    let before = std::fs::read(crate::paths::under(&root, crate::paths::USERS)).unwrap();
    let good = hash_password("a good password");
    // A hash that costs 4 GiB per login, one in another algorithm, text.
    let dos = "$argon2id$v=19$m=4194304,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g";
    let argon2i = "$argon2i$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g";
    for (text, want) in [
        (file(&[("bo", "viewer", dos)], &[]), "at most m=65536"),
        (file(&[("bo", "viewer", argon2i)], &[]), "not argon2id"),
        (
            file(&[("bo", "viewer", "hunter2hunter2")], &[]),
            "not a PHC password hash",
        ),
        (file(&[("Bo;rm", "viewer", &good)], &[]), "is not a user name"),
        (file(&[("bo", "root", &good)], &[]), "unknown variant"),
        (
            file(&[("bo", "viewer", &good), ("bo", "admin", &good)], &[]),
            "listed twice",
        ),
        (file(&[("bo", "viewer", &good)], &["bo"]), "also in users"),
        (file(&[("bo", "viewer", &good)], &["../x"]), "retire[0]"),
        (format!("version = 2\n{}", &file(&[], &[])[12..]), "version = 2"),
        ("version = 1\nshell = \"x\"\n".into(), "unknown field"),
        ("x".repeat(300 * 1024), "larger than 256 KiB"),
    ] {
        let f = write(d.path(), &text);
        let e = format!("{:#}", apply(&root, &config(), &f, false).unwrap_err());
        assert!(e.contains(want), "{want}: {e}");
    }
    assert_eq!(
        std::fs::read(crate::paths::under(&root, crate::paths::USERS)).unwrap(),
        before
    );
}
