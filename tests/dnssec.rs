//! DNSSEC keys through the binary: `meridian dnssec keygen` and `ds`, and zone keys named in
//! the server file checked by `meridian check` and shown (public facts only) by status.

mod common;

use std::process::Command;

use common::*;

/// Runs `meridian dnssec ARGS` in `dir`; returns its standard output.
fn dnssec(dir: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .arg("dnssec")
        .args(args)
        .args(["--dir", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn zone_keys_are_checked_at_load_and_never_shown() {
    let cfg = ConfigDir::new(&zone_with(""), "");
    let dir = cfg.path("");
    let csk = dnssec(&dir, &["keygen", "example.test"]);
    let zsk = dnssec(
        &dir,
        &[
            "keygen",
            "example.test",
            "--role",
            "zsk",
            "--algorithm",
            "ed25519",
        ],
    );
    let ds = dnssec(&dir, &["ds", "example.test"]);
    let tag = csk.rsplit('+').next().unwrap().trim_start_matches('0');
    assert!(
        ds.starts_with(&format!("example.test. IN DS {tag} 13 2 ")),
        "{ds}"
    );
    assert_eq!(ds.lines().count(), 1, "the ZSK has no DS: {ds}");
    let private = std::fs::read_to_string(cfg.path(&format!("{csk}.private"))).unwrap();
    let secret = private
        .lines()
        .find_map(|l| l.strip_prefix("PrivateKey: "))
        .unwrap()
        .to_string();

    let with_keys = |keys: &[&str]| {
        let list: Vec<String> = keys.iter().map(|k| format!("{k:?}")).collect();
        let server = std::fs::read_to_string(cfg.config()).unwrap();
        let server = match server.find("dnssec_keys") {
            Some(at) => server[..at].to_string(),
            None => server,
        };
        cfg.write(
            "meridian.toml",
            &format!("{server}dnssec_keys = [{}]\n", list.join(", ")),
        );
    };
    with_keys(&[&zsk]);
    let (ok, out) = check_config(&cfg);
    assert!(!ok);
    assert!(out.contains("meridian.toml:"), "{out}");
    assert!(
        out.contains("zone \"example.test\": dnssec_keys: no active key-signing key"),
        "{out}"
    );

    with_keys(&[&csk, &zsk]);
    let (ok, out) = check_config(&cfg);
    assert!(ok, "{out}");
    let checked = check_output(&cfg);
    let all = String::from_utf8_lossy(&checked.stdout).into_owned() + &out;
    assert!(all.contains("answers are not signed yet"), "{all}");

    let srv = Server::start(&cfg);
    let st = srv.status();
    let keys = &st["zones"][0]["dnssec_keys"];
    assert_eq!(keys.as_array().unwrap().len(), 2, "{keys}");
    assert_eq!(keys[0]["tag"].to_string(), tag);
    assert!(
        !st.to_string().contains(&secret),
        "status shows no key material"
    );
    assert!(
        !srv.stderr().contains(&secret),
        "the log shows no key material"
    );
}
