//! Network namespaces for the TCP tools' tests: made by the test, with loopback up
//! and an nftables input chain to drop packets on, deleted on drop. All traffic
//! stays inside them.

use std::{
    collections::HashMap,
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    os::{fd::AsRawFd as _, unix::fs::MetadataExt as _},
    process::Command,
};

use crate::{host::unique_name, sh};

pub struct Netns {
    pub name: String,
}

impl Netns {
    #[track_caller]
    #[allow(
        clippy::new_without_default,
        reason = "making a namespace is not a default value"
    )]
    pub fn new() -> Netns {
        let name = unique_name("netns");
        // The first `ip netns add` on a machine makes /run/netns a shared mount;
        // several at once race on that.
        static ADD: std::sync::Mutex<()> = std::sync::Mutex::new(());
        {
            let _guard = ADD.lock().unwrap_or_else(|e| e.into_inner());
            sh(&format!("ip netns add {name}"));
        }
        let ns = Netns { name };
        sh(&format!("ip -n {} link set lo up", ns.name));
        ns.exec("nft add table inet tracer");
        ns.exec(
            "nft add chain inet tracer in '{ type filter hook input priority 0; policy accept; }'",
        );
        ns
    }

    /// Runs a shell command inside the namespace.
    #[track_caller]
    pub fn exec(&self, cmd: &str) -> String {
        sh(&format!(
            "ip netns exec {} sh -c \"{}\"",
            self.name,
            cmd.replace('"', "\\\"")
        ))
    }

    /// Puts an accept-all rule ahead of the others: from now on nothing is dropped
    /// and the other rules' counters stand still (flushing would delete them).
    #[track_caller]
    pub fn accept_all(&self) {
        self.exec("nft insert rule inet tracer in accept");
    }

    /// Packets the input chain's counted rules have matched (rules written with
    /// `counter`), summed.
    pub fn counted_packets(&self) -> u64 {
        let text = self.exec("nft list chain inet tracer in");
        let words: Vec<&str> = text.split_whitespace().collect();
        words
            .windows(2)
            .filter(|w| w[0] == "packets")
            .filter_map(|w| w[1].parse::<u64>().ok())
            .sum()
    }

    /// Adds a rule to the input chain (e.g. `tcp dport 80 drop`).
    #[track_caller]
    pub fn drop_rule(&self, rule: &str) {
        self.exec(&format!("nft add rule inet tracer in '{rule}'"));
    }

    #[track_caller]
    pub fn flush_rules(&self) {
        self.exec("nft flush chain inet tracer in");
    }

    /// The namespace's inode number (what tracer's --netns shows).
    pub fn inode(&self) -> u32 {
        std::fs::metadata(format!("/var/run/netns/{}", self.name))
            .unwrap()
            .ino() as u32
    }

    /// Runs `f` on a thread that has entered the namespace: sockets it makes
    /// belong to the namespace (and may be used from any thread afterwards).
    pub fn run<T: Send + 'static>(&self, name: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                let ns = std::fs::File::open(&path).unwrap();
                // SAFETY: setns on this thread only, with a valid namespace fd.
                let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
                f()
            })
            .unwrap()
            .join()
            .unwrap()
    }

    /// A connected pair on loopback (`127.0.0.1` or `::1`): (client, server, port).
    pub fn connect(&self, loopback: &'static str) -> (TcpStream, TcpStream, u16) {
        self.run("ns-connect", move || {
            let listener = TcpListener::bind((loopback, 0)).unwrap();
            let port = listener.local_addr().unwrap().port();
            let client = TcpStream::connect((loopback, port)).unwrap();
            let (server, _) = listener.accept().unwrap();
            client.set_nodelay(true).unwrap();
            server.set_nodelay(true).unwrap();
            (client, server, port)
        })
    }

    /// TCP counters of the namespace, as "Tcp:RetransSegs", "TcpExt:TCPLossProbes".
    pub fn snmp(&self) -> HashMap<String, u64> {
        parse_snmp(&self.exec("cat /proc/net/snmp /proc/net/netstat"))
    }
}

/// /proc/net/snmp and netstat text as "Tcp:RetransSegs" -> value.
fn parse_snmp(text: &str) -> HashMap<String, u64> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = HashMap::new();
    for pair in lines.chunks(2) {
        let [names, values] = pair else { continue };
        let mut names = names.split_whitespace();
        let mut values = values.split_whitespace();
        let prefix = names.next().unwrap_or("").to_string();
        values.next();
        for (n, v) in names.zip(values) {
            if let Ok(v) = v.parse() {
                out.insert(format!("{prefix}{n}"), v);
            }
        }
    }
    out
}

/// A TCP counter summed over every network namespace of the host (those of
/// running processes, and the named ones): what a host-wide tool counts.
pub fn host_tcp_counter(name: &str) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    let mut seen = std::collections::HashSet::new();
    let mut total = 0;
    let pids = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        });
    for e in pids {
        let dir = e.path();
        let Ok(ns) = std::fs::metadata(dir.join("ns/net")) else {
            continue;
        };
        if !seen.insert(ns.ino()) {
            continue;
        }
        let text = std::fs::read_to_string(dir.join("net/snmp")).unwrap_or_default()
            + &std::fs::read_to_string(dir.join("net/netstat")).unwrap_or_default();
        total += parse_snmp(&text).get(name).copied().unwrap_or(0);
    }
    // Named namespaces no process is in.
    for e in std::fs::read_dir("/var/run/netns")
        .into_iter()
        .flatten()
        .flatten()
    {
        let Ok(ns) = std::fs::metadata(e.path()) else {
            continue;
        };
        if seen.insert(ns.ino()) {
            let n = Netns {
                name: e.file_name().to_string_lossy().into_owned(),
            };
            total += n.snmp().get(name).copied().unwrap_or(0);
            std::mem::forget(n);
        }
    }
    total
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// The kernel's TCP_INFO for a socket.
pub fn tcp_info(s: &TcpStream) -> libc::tcp_info {
    // SAFETY: tcp_info is plain data; getsockopt fills at most `len` bytes of it.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "TCP_INFO: {}", std::io::Error::last_os_error());
    info
}

/// Waits until neither end has unacknowledged data: every segment each sent has
/// been acknowledged (so no delayed ACK of earlier traffic is still to come).
#[track_caller]
pub fn wait_acked(a: &TcpStream, b: &TcpStream) {
    crate::wait_for("both ends to have everything acknowledged", || {
        tcp_info(a).tcpi_unacked == 0 && tcp_info(b).tcpi_unacked == 0
    });
}

/// Segments a socket has received (TCP_INFO's tcpi_segs_in).
pub fn segs_in(s: &TcpStream) -> u64 {
    tcp_info(s).tcpi_segs_in as u64
}

/// Sends `n` bytes and has the peer read them.
pub fn transfer(from: &mut TcpStream, to: &mut TcpStream, n: usize) {
    from.write_all(&vec![7u8; n]).unwrap();
    let mut buf = vec![0u8; n];
    to.read_exact(&mut buf).unwrap();
}

/// `rounds` request/response exchanges of `size` bytes.
pub fn ping_pong(client: &mut TcpStream, server: &mut TcpStream, rounds: usize, size: usize) {
    for _ in 0..rounds {
        transfer(client, server, size);
        transfer(server, client, size);
    }
}
