//! Host resources: free space of a filesystem (statvfs), memory (/proc/meminfo) and load
//! (/proc/loadavg). The parsers are pure; the readers are the thin edge around them.

use std::path::Path;

/// Total and free (available to unprivileged users) bytes of the filesystem holding `path`.
pub fn disk_space(path: &Path) -> std::io::Result<(u64, u64)> {
    let stat = nix::sys::statvfs::statvfs(path).map_err(std::io::Error::from)?;
    let block = stat.fragment_size() as u64;
    Ok((
        stat.blocks() as u64 * block,
        stat.blocks_available() as u64 * block,
    ))
}

/// The filesystem id of `path`, to count a filesystem once when two paths share it.
pub fn filesystem_id(path: &Path) -> Option<u64> {
    nix::sys::statvfs::statvfs(path)
        .ok()
        .map(|s| s.filesystem_id())
}

/// `(MemTotal, MemAvailable)` in bytes.
pub fn parse_meminfo(text: &str) -> (Option<u64>, Option<u64>) {
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
            .map(|kib| kib * 1024)
    };
    (field("MemTotal"), field("MemAvailable"))
}

/// The one-minute load average.
pub fn parse_loadavg(text: &str) -> Option<f64> {
    text.split_whitespace().next()?.parse().ok()
}

pub fn memory() -> (Option<u64>, Option<u64>) {
    std::fs::read_to_string("/proc/meminfo")
        .map(|t| parse_meminfo(&t))
        .unwrap_or((None, None))
}

pub fn load1() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|t| parse_loadavg(&t))
}

pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_and_loadavg_parse() {
        let meminfo =
            "MemTotal:       24576000 kB\nMemFree:   100 kB\nMemAvailable:   12288000 kB\n";
        assert_eq!(
            parse_meminfo(meminfo),
            (Some(24_576_000 * 1024), Some(12_288_000 * 1024))
        );
        assert_eq!(parse_meminfo("garbage"), (None, None));
        assert_eq!(parse_loadavg("0.52 0.40 0.30 1/123 4567\n"), Some(0.52));
        assert_eq!(parse_loadavg(""), None);
    }

    #[test]
    fn disk_space_of_a_real_directory() {
        let (total, free) = disk_space(Path::new("/")).unwrap();
        assert!(total > 0 && free <= total);
        assert!(disk_space(Path::new("/nonexistent/dir")).is_err());
    }
}
