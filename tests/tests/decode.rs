//! `mat decode MAC`: the rack, host and VM slot of an outside MAC, and on its host who holds it
//! (a bound VM, a hold-down, nobody); offline from the configuration when no daemon runs.

use std::fs;

use mat_tests::{
    daemon::{Daemon, POOL, TempDir, error_code, mac_str, mat_binary, stderr},
    topology::Lab,
};
use serde_json::Value;

/// rack 1, host 3: the host pool is 02:00:5e:01:03:00/40.
const PLAN: [&str; 8] = [
    "--pool",
    POOL,
    "--rack",
    "1",
    "--host",
    "3",
    "--hold-down",
    "60s",
];

fn decode_json(d: &Daemon, mac: &str) -> Value {
    d.cli_json(&["decode", mac])
}

#[test]
fn bound_held_free_other_foreign_malformed() {
    let lab = Lab::new(2);
    let mut d = Daemon::start(&lab.hv, &PLAN);
    let (vm0, vm1) = (&lab.vms[0], &lab.vms[1]);
    d.cli_ok(&[
        "attach",
        &vm0.port,
        "--mac",
        &mac_str(&vm0.mac),
        "--vm",
        "vm0",
        "--ip",
        &vm0.ip.to_string(),
    ]);
    d.cli_ok(&[
        "attach",
        &vm1.port,
        "--mac",
        &mac_str(&vm1.mac),
        "--vm",
        "vm1",
    ]);
    d.cli_ok(&["detach", &vm1.port]);

    // Bound: which VM, port and inside MAC.
    let b = decode_json(&d, "02:00:5e:01:03:00");
    assert_eq!(b["status"], "bound", "{b}");
    assert_eq!((b["rack"].as_u64(), b["host"].as_u64()), (Some(1), Some(3)));
    assert_eq!(b["vm_slot"], 0);
    assert_eq!(b["pool"], POOL);
    assert_eq!(b["host_pool"], "02:00:5e:01:03:00/40");
    assert_eq!(b["rack_route"], "02:00:5e:01:00:00/32");
    assert_eq!(b["binding"]["vm"], "vm0");
    assert_eq!(b["binding"]["port"], vm0.port.as_str());
    assert_eq!(b["binding"]["inside"], mac_str(&vm0.mac));
    assert_eq!(b["binding"]["ips"][0], vm0.ip.to_string());
    assert!(b.get("held").is_none());
    let text = d.cli_ok(&["decode", "02:00:5e:01:03:00"]);
    assert!(
        text.contains("bound")
            && text.contains(&vm0.port)
            && text.contains(&mac_str(&vm0.mac))
            && text.contains("vm slot 0"),
        "{text}"
    );

    // Held down: since when, until when.
    let h = decode_json(&d, "02:00:5e:01:03:01");
    assert_eq!(h["status"], "held_down", "{h}");
    assert_eq!(h["vm_slot"], 1);
    assert_eq!(h["held"]["vm"], "vm1");
    assert_eq!(h["held"]["inside"], mac_str(&vm1.mac));
    let (released, until) = (
        h["held"]["released_ms"].as_u64().unwrap(),
        h["held"]["until_ms"].as_u64().unwrap(),
    );
    assert_eq!(until - released, 60_000);
    let remaining = h["held"]["remaining_ms"].as_u64().unwrap();
    assert!(remaining > 0 && remaining <= 60_000, "{h}");
    assert!(h.get("binding").is_none());
    let text = d.cli_ok(&["decode", "02:00:5e:01:03:01"]);
    assert!(
        text.contains("held down") && text.contains("until"),
        "{text}"
    );

    // Free: this host's, never given out.
    let f = decode_json(&d, "02:00:5e:01:03:2a");
    assert_eq!(f["status"], "free", "{f}");
    assert_eq!(f["vm_slot"], 42);

    // Another rack's host: decoded, nothing more is known here.
    let o = decode_json(&d, "02:00:5e:02:07:09");
    assert_eq!(o["status"], "other_host", "{o}");
    assert_eq!(
        (
            o["rack"].as_u64(),
            o["host"].as_u64(),
            o["vm_slot"].as_u64()
        ),
        (Some(2), Some(7), Some(9))
    );
    assert_eq!(o["host_pool"], "02:00:5e:02:07:00/40");

    // Outside the pool: refused, exit 1, with the error in JSON too.
    d.cli_refused(&["decode", "52:54:00:12:34:56"], "not_in_pool");
    let out = d.cli(&["decode", "52:54:00:12:34:56", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let e: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(e["error"]["code"], "not_in_pool");
    assert!(stderr(&out).contains("not in the outside pool 02:00:5e:00:00:00/24"));

    // Malformed: a usage error on the CLI, invalid_mac or bad_request on the socket.
    let out = d.cli(&["decode", "02:00:5e:01:03"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is not a MAC address"),
        "{}",
        stderr(&out)
    );
    let r = d.request(r#"{"op":"decode","mac":"02:00:5e:01:03:zz"}"#);
    assert_eq!(error_code(&r), "invalid_mac", "{r}");
    let r = d.request(r#"{"op":"decode"}"#);
    assert_eq!(error_code(&r), "bad_request", "{r}");
    let r = d.request(r#"{"op":"decode","mac":"02:00:5e:01:03:00","vm":"x"}"#);
    assert_eq!(error_code(&r), "bad_request", "{r}");

    // No daemon: decoded from the configuration, status unchecked.
    let _ = d.terminate();
    let dir = TempDir::new("mat-decode-");
    let config = dir.path().join("mat.toml");
    fs::write(&config, format!("pool = \"{POOL}\"\nrack = 1\nhost = 3\n")).unwrap();
    let offline = |args: &[&str]| {
        std::process::Command::new(mat_binary())
            .arg("--socket")
            .arg(dir.path().join("none.sock"))
            .arg("decode")
            .args(args)
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap()
    };
    let out = offline(&["02:00:5e:01:03:00", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let u: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(u["status"], "unchecked", "{u}");
    assert_eq!(
        (
            u["rack"].as_u64(),
            u["host"].as_u64(),
            u["vm_slot"].as_u64()
        ),
        (Some(1), Some(3), Some(0))
    );
    let out = offline(&["02:00:5e:02:07:09", "--json"]);
    let o: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(o["status"], "other_host");
    let out = offline(&["52:54:00:12:34:56"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("mat: refused (not_in_pool):"),
        "{}",
        stderr(&out)
    );
    // Neither a daemon nor a plan: said so, exit 1.
    fs::write(&config, "rack_bits = 8\n").unwrap();
    let out = offline(&["02:00:5e:01:03:00"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no daemon at") && stderr(&out).contains("not configured"),
        "{}",
        stderr(&out)
    );
}
