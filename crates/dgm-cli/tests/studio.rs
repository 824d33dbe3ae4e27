//! `dgm studio`, the real binary: it serves on the port it prints (port 0 picks a free one), lists the runs
//! of its folder, warns when it is bound beyond loopback, and refuses bad flags with one line and exit 2.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Stdio};
use std::time::Duration;

use common::*;

/// The studio process, killed when dropped.
struct Studio(Child);

impl Drop for Studio {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A plain HTTP/1.1 GET; the status line and the body.
fn get(addr: &str, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text.lines().next().unwrap_or_default().to_string();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn studio_serves_the_runs_folder_on_the_port_it_prints() {
    let d = tmp("studio");
    let runs = d.join("runs");
    let o = run(&mut train_cmd(
        "vae",
        "toy2d:moons",
        &runs.join("moons"),
        10,
        &["model.hidden=[16]", "train.batch_size=32"],
    ));
    assert!(o.status.success(), "{}", stderr(&o));
    // a second run in a sub-folder
    let o = run(&mut train_cmd(
        "vae",
        "toy2d:moons",
        &runs.join("group/again"),
        5,
        &["model.hidden=[16]"],
    ));
    assert!(o.status.success(), "{}", stderr(&o));
    let mut child = dgm()
        .args(["studio", "--runs"])
        .arg(&runs)
        .args(["--port", "0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let studio = Studio(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    let addr = url.trim_start_matches("http://").trim_end_matches('/');
    assert!(addr.starts_with("127.0.0.1:"), "{line}");
    let (status, body) = get(addr, "/api/runs");
    assert!(status.contains("200"), "{status}");
    assert!(
        body.contains("\"moons\"") && body.contains("\"group/again\""),
        "{body}"
    );
    let (status, body) = get(addr, "/api/run?run=..%2Fx");
    assert!(status.contains("400"), "{status}");
    assert!(body.contains("\"error\""), "{body}");
    let (status, body) = get(addr, "/");
    assert!(
        status.contains("200") && body.contains("dgm studio"),
        "{status}"
    );
    drop(studio);
}

#[test]
fn studio_refuses_bad_flags_and_a_busy_port() {
    let d = tmp("studio-bad");
    let o = run(dgm()
        .args(["studio", "--queue", "0", "--runs"])
        .arg(d.join("r")));
    assert_bad_input(&o, &["--queue", "at least 1"]);
    // a port another program holds
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port().to_string();
    let o = run(dgm()
        .args(["studio", "--port", &port, "--runs"])
        .arg(d.join("r")));
    assert_bad_input(&o, &["--port", "cannot listen"]);
    let o = run(dgm().args(["studio", "--bind", "not-an-address"]));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}
