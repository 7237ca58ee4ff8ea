//! A client "from outside" on one machine: a network namespace joined to the host by a veth pair,
//! so a request from it to the host's end of the pair arrives on a real interface, not on
//! loopback (the kernel then DNATs a port Docker published straight to the container, where a
//! request to 127.0.0.1 goes through Docker's userland proxy).

use std::process::Command;

/// Network namespace `name` with a veth pair: `host_ip` on the host's end, `ns_ip` inside; removed
/// (namespace and both ends of the pair) when dropped. [`remove`] does the same by name, for a
/// cleanup that runs when no destructor does.
pub struct VethNamespace {
    pub name: String,
    pub host_ip: String,
    pub ns_ip: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "`ip {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The host-side interface of namespace `name`'s pair (at most 15 characters).
fn host_if(name: &str) -> String {
    let tail: String = name
        .chars()
        .rev()
        .take(11)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("vh{tail}")
}

impl VethNamespace {
    /// Creates it; `name` must be unique on the host (e.g. carry the pid). The /30 it uses is
    /// 10.231.X.Y/30 from this process's pid, out of Docker's default pools.
    pub fn create(name: &str) -> VethNamespace {
        remove(name); // left by a killed earlier run of this pid
        let pid = std::process::id();
        let (a, b) = ((pid >> 6) & 0xff, (pid & 0x3f) * 4);
        let host_ip = format!("10.231.{a}.{}", b + 1);
        let ns_ip = format!("10.231.{a}.{}", b + 2);
        let host_end = host_if(name);
        let ns_end = format!("vn{}", &host_end[2..]);
        ip(&["netns", "add", name]);
        let ns = VethNamespace {
            name: name.to_owned(),
            host_ip,
            ns_ip,
        };
        ip(&[
            "link", "add", &host_end, "type", "veth", "peer", "name", &ns_end,
        ]);
        ip(&["link", "set", &ns_end, "netns", name]);
        ip(&[
            "addr",
            "add",
            &format!("{}/30", ns.host_ip),
            "dev",
            &host_end,
        ]);
        ip(&["link", "set", &host_end, "up"]);
        ip(&["-n", name, "link", "set", "lo", "up"]);
        ip(&[
            "-n",
            name,
            "addr",
            "add",
            &format!("{}/30", ns.ns_ip),
            "dev",
            &ns_end,
        ]);
        ip(&["-n", name, "link", "set", &ns_end, "up"]);
        ip(&["-n", name, "route", "add", "default", "via", &ns.host_ip]);
        ns
    }

    /// A command that runs inside the namespace (`nsenter --net`, which joins only the network
    /// namespace).
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", self.name))
            .arg(program);
        c
    }
}

/// Removes namespace `name` and the host end of its pair; quiet when there is none.
pub fn remove(name: &str) {
    let _ = Command::new("ip").args(["netns", "del", name]).output();
    // Deleting the namespace deletes the pair; this covers a pair whose namespace is already gone.
    let _ = Command::new("ip")
        .args(["link", "del", &host_if(name)])
        .output();
}

impl Drop for VethNamespace {
    fn drop(&mut self) {
        remove(&self.name);
    }
}
