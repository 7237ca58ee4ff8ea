//! The host layer: free disk space and how soon it runs out, available memory, and load. Each
//! limit is one decision here; the findings and the host's check rows are both made from it.

use super::{Facts, Problem, Rules};
use crate::health::model::{DiskObs, HostObs};
use crate::health::{Finding, HOST_COMPONENT, Kind};

/// Below this share of free disk space the disk is low.
pub const DISK_LOW_FRACTION: f64 = 0.10;
/// Below this share of available memory, memory is low.
pub const MEMORY_LOW_FRACTION: f64 = 0.10;
/// One-minute load per CPU above which the host is overloaded.
pub const LOAD_HIGH_PER_CPU: f64 = 2.0;

/// The free share of a disk; `None` for a disk of unknown size, which says nothing.
fn free_fraction(disk: &DiskObs) -> Option<f64> {
    (disk.total_bytes > 0).then(|| disk.free_bytes as f64 / disk.total_bytes as f64)
}

/// The free share of a disk that has less than [`DISK_LOW_FRACTION`] free.
pub fn disk_low(disk: &DiskObs) -> Option<f64> {
    free_fraction(disk).filter(|f| *f < DISK_LOW_FRACTION)
}

/// The hours until a disk (of known size) is full, when that is within the warning horizon.
pub fn disk_filling(disk: &DiskObs, rules: &Rules) -> Option<f64> {
    free_fraction(disk)?;
    disk.hours_left.filter(|h| *h < rules.disk_warning_hours)
}

/// The available share of memory, when it is below [`MEMORY_LOW_FRACTION`].
pub fn memory_low(host: &HostObs) -> Option<f64> {
    let (Some(total), Some(available)) = (host.mem_total_bytes, host.mem_available_bytes) else {
        return None;
    };
    (total > 0)
        .then(|| available as f64 / total as f64)
        .filter(|f| *f < MEMORY_LOW_FRACTION)
}

/// The one-minute load per CPU, when it is above [`LOAD_HIGH_PER_CPU`].
pub fn load_high(host: &HostObs) -> Option<f64> {
    let load = host.load1?;
    Some(load / host.cpus.max(1) as f64).filter(|per_cpu| *per_cpu > LOAD_HIGH_PER_CPU)
}

pub fn classify_host(host: &HostObs, rules: &Rules) -> Vec<Finding> {
    let mut out = Vec::new();
    for disk in &host.disks {
        if let Some(fraction) = disk_low(disk) {
            let facts = Facts {
                fraction_left: Some(fraction),
                ..Facts::default()
            };
            let summary = format!(
                "{} ({}) has {:.1}% free ({})",
                disk.path,
                disk.role,
                fraction * 100.0,
                human_bytes(disk.free_bytes)
            );
            out.push(Problem::with(Kind::DiskLow, facts, summary));
        }
        if let Some(hours) = disk_filling(disk, rules) {
            let facts = Facts {
                hours_left: Some(hours),
                ..Facts::default()
            };
            let summary = format!(
                "{} ({}) fills in about {} at the recent rate ({} free)",
                disk.path,
                disk.role,
                human_hours(hours),
                human_bytes(disk.free_bytes)
            );
            out.push(Problem::with(Kind::DiskFilling, facts, summary));
        }
    }
    if let Some(fraction) = memory_low(host) {
        let facts = Facts {
            fraction_left: Some(fraction),
            ..Facts::default()
        };
        let summary = format!(
            "{:.1}% of memory is available ({} of {})",
            fraction * 100.0,
            human_bytes(host.mem_available_bytes.unwrap_or_default()),
            human_bytes(host.mem_total_bytes.unwrap_or_default())
        );
        out.push(Problem::with(Kind::MemoryLow, facts, summary));
    }
    if let Some(per_cpu) = load_high(host) {
        let facts = Facts {
            load_per_cpu: Some(per_cpu),
            ..Facts::default()
        };
        let summary = format!(
            "load average {:.2} on {} CPUs",
            host.load1.unwrap_or_default(),
            host.cpus
        );
        out.push(Problem::with(Kind::LoadHigh, facts, summary));
    }
    out.into_iter().map(|p| p.at(HOST_COMPONENT)).collect()
}

pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

pub fn human_hours(hours: f64) -> String {
    if hours < 1.0 {
        format!("{:.0} minutes", (hours * 60.0).max(1.0))
    } else if hours < 48.0 {
        format!("{hours:.1} hours")
    } else {
        format!("{:.1} days", hours / 24.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::Severity;
    use crate::health::classify::fixtures::{Expected, expected, host, kinds};

    fn disk(total_bytes: u64, free_bytes: u64, hours_left: Option<f64>) -> DiskObs {
        DiskObs {
            role: "docker".into(),
            path: "/var/lib/docker".into(),
            total_bytes,
            free_bytes,
            hours_left,
        }
    }

    #[test]
    fn a_disk_is_low_below_a_tenth_free_and_unknown_sizes_say_nothing() {
        assert_eq!(disk_low(&disk(1_000, 99, None)), Some(0.099));
        assert_eq!(disk_low(&disk(1_000, 100, None)), None, "at the limit");
        assert_eq!(disk_low(&disk(1_000, 0, None)), Some(0.0));
        assert_eq!(disk_low(&disk(0, 0, None)), None);
    }

    #[test]
    fn a_disk_is_filling_when_full_within_the_horizon() {
        let rules = Rules::default();
        assert_eq!(
            disk_filling(&disk(1_000, 500, Some(23.9)), &rules),
            Some(23.9)
        );
        assert_eq!(disk_filling(&disk(1_000, 500, Some(24.0)), &rules), None);
        assert_eq!(disk_filling(&disk(1_000, 500, None), &rules), None);
        assert_eq!(
            disk_filling(&disk(0, 0, Some(0.5)), &rules),
            None,
            "size unknown"
        );
        let sooner = Rules {
            disk_warning_hours: 12.0,
            ..Rules::default()
        };
        assert_eq!(disk_filling(&disk(1_000, 500, Some(20.0)), &sooner), None);
    }

    #[test]
    fn memory_is_low_below_a_tenth_available() {
        let with = |total, available| HostObs {
            mem_total_bytes: total,
            mem_available_bytes: available,
            ..host(0.5, None, 0.5, 1.0)
        };
        assert_eq!(memory_low(&with(Some(1_000), Some(99))), Some(0.099));
        assert_eq!(
            memory_low(&with(Some(1_000), Some(100))),
            None,
            "at the limit"
        );
        assert_eq!(memory_low(&with(Some(0), Some(0))), None, "size unknown");
        assert_eq!(memory_low(&with(None, Some(0))), None);
        assert_eq!(memory_low(&with(Some(1_000), None)), None);
    }

    #[test]
    fn load_is_high_above_two_per_cpu() {
        let with = |load1, cpus| HostObs {
            load1,
            cpus,
            ..host(0.5, None, 0.5, 1.0)
        };
        assert_eq!(load_high(&with(Some(4.2), 2)), Some(2.1));
        assert_eq!(load_high(&with(Some(4.0), 2)), None, "at the limit");
        assert_eq!(
            load_high(&with(Some(2.5), 0)),
            Some(2.5),
            "no CPU count: one"
        );
        assert_eq!(load_high(&with(Some(f64::NAN), 2)), None);
        assert_eq!(load_high(&with(None, 2)), None);
    }

    #[test]
    fn sizes_and_durations_read_as_people_say_them() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
        assert_eq!(human_hours(0.5), "30 minutes");
        assert_eq!(human_hours(12.0), "12.0 hours");
        assert_eq!(human_hours(72.0), "3.0 days");
    }

    #[test]
    fn host_observations_make_these_findings() {
        use Severity::{Critical, High, Low, Medium};
        let cases: Vec<(&str, HostObs, Expected)> = vec![
            ("all fine", host(0.5, None, 0.5, 1.0), &[]),
            (
                "disk at 8%",
                host(0.08, None, 0.5, 1.0),
                &[(Kind::DiskLow, Medium)],
            ),
            (
                "disk at 3%",
                host(0.03, None, 0.5, 1.0),
                &[(Kind::DiskLow, High)],
            ),
            (
                "disk at 0.5%",
                host(0.005, None, 0.5, 1.0),
                &[(Kind::DiskLow, Critical)],
            ),
            (
                "full in 30 h: beyond the 24 h horizon",
                host(0.5, Some(30.0), 0.5, 1.0),
                &[],
            ),
            (
                "full in 12 h",
                host(0.5, Some(12.0), 0.5, 1.0),
                &[(Kind::DiskFilling, Medium)],
            ),
            (
                "full in 3 h",
                host(0.5, Some(3.0), 0.5, 1.0),
                &[(Kind::DiskFilling, High)],
            ),
            (
                "low and full in 30 minutes",
                host(0.03, Some(0.5), 0.5, 1.0),
                &[(Kind::DiskLow, High), (Kind::DiskFilling, Critical)],
            ),
            (
                "memory at 8%",
                host(0.5, None, 0.08, 1.0),
                &[(Kind::MemoryLow, Medium)],
            ),
            (
                "memory at 3%",
                host(0.5, None, 0.03, 1.0),
                &[(Kind::MemoryLow, High)],
            ),
            (
                "load 4 on 2 CPUs: at the limit",
                host(0.5, None, 0.5, 4.0),
                &[],
            ),
            (
                "load 6 on 2 CPUs",
                host(0.5, None, 0.5, 6.0),
                &[(Kind::LoadHigh, Low)],
            ),
            (
                "load 10 on 2 CPUs",
                host(0.5, None, 0.5, 10.0),
                &[(Kind::LoadHigh, Medium)],
            ),
        ];
        let rules = Rules::default();
        for (what, obs, want) in cases {
            let findings = classify_host(&obs, &rules);
            assert_eq!(kinds(&findings), expected(want), "{what}: {findings:#?}");
            assert!(
                findings.iter().all(|f| f.component == HOST_COMPONENT),
                "{what}"
            );
        }
        let mut unknown = host(0.0, None, 0.5, 1.0);
        unknown.disks[0].total_bytes = 0;
        assert!(
            classify_host(&unknown, &rules).is_empty(),
            "a disk of unknown size says nothing"
        );
    }
}
