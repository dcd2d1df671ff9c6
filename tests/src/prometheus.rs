//! A real Prometheus (Debian's package), started by the test on 127.0.0.1 with
//! its own configuration and storage, scraping one target every second, and
//! queried through its HTTP API. Stopped and its files removed on drop.

use std::{
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::Value;

pub struct Prometheus {
    child: Child,
    pub port: u16,
    dir: PathBuf,
}

/// A port nothing listens on right now (the kernel's choice).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET `path` from 127.0.0.1:`port`: (status, headers, body). One request per
/// connection, as the exporter serves them.
pub fn http_get(port: u16, path: &str, headers: &[&str]) -> (u16, String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connecting");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("reading the response");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Prometheus {
    /// Starts Prometheus scraping `target` (host:port) every second.
    #[track_caller]
    pub fn start(target: &str) -> Prometheus {
        let dir = std::env::temp_dir().join(format!("tracer-prometheus-{}", free_port()));
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: tracer\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(dir.join("prometheus.log"))
                    .map(Stdio::from)
                    .unwrap_or(Stdio::null()),
            )
            .spawn()
            .expect("starting prometheus (apt-get install prometheus)");
        let p = Prometheus { child, port, dir };
        crate::wait_for("Prometheus to answer queries", || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
                && http_get(port, "/-/ready", &[]).0 == 200
        });
        p
    }

    /// An instant query's result vector.
    pub fn query(&self, promql: &str) -> Vec<Value> {
        let (status, _, body) = http_get(
            self.port,
            &format!("/api/v1/query?query={}", url_encode(promql)),
            &[],
        );
        let v: Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("query {promql}: status {status}, {e}: {body}"));
        assert_eq!(v["status"], "success", "query {promql}: {body}");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// The single value of a query with one result (None when it has none).
    pub fn value(&self, promql: &str) -> Option<f64> {
        let r = self.query(promql);
        assert!(r.len() <= 1, "{promql} has {} results: {r:?}", r.len());
        r.first()
            .and_then(|s| s["value"][1].as_str())
            .and_then(|v| v.parse().ok())
    }

    /// Waits until a query's value is `want` (Prometheus scrapes every second).
    #[track_caller]
    pub fn wait_value(&self, promql: &str, want: f64) {
        crate::wait_for(&format!("{promql} == {want}"), || {
            self.value(promql) == Some(want)
        });
    }

    /// The log of the Prometheus process, for messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
