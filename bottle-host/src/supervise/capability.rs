//! What an approved `request_capability` changes (SPEC §5: recorded,
//! applied on `resume`). The agent writes free text — the tool's own
//! example is `{kind: "memory", detail: "8 GiB memory"}` — so this reads the
//! first quantity in `detail` and the kind's usual spellings (`cpu`/`cpus`,
//! `memory`/`mem`/`ram`, `pids`/`processes`). Anything else (a package, a
//! tool) is not applied automatically: the operator adds it to the bottle.

use bottle_core::BottlePlan;

/// Smallest memory limit a capability may set (docker refuses less than 6 MiB;
/// an agent below 64 MiB does not start).
const MIN_MEMORY: u64 = 64 << 20;
/// Largest memory limit a capability may set (1 TiB).
const MAX_MEMORY: u64 = 1 << 40;
/// Largest CPU count a capability may set.
const MAX_CPUS: f64 = 1024.0;
/// Largest pids limit a capability may set.
const MAX_PIDS: u64 = 1 << 22;

/// A resource limit an approved capability request sets on resume.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CapabilityChange {
    /// Agent memory limit, bytes.
    Memory(u64),
    /// Agent CPU limit.
    Cpus(f64),
    /// Agent process limit.
    Pids(u32),
}

impl CapabilityChange {
    /// Set this limit on `plan`.
    pub fn apply(&self, plan: &mut BottlePlan) {
        match *self {
            CapabilityChange::Memory(b) => plan.resources.memory_bytes = b,
            CapabilityChange::Cpus(c) => plan.resources.cpus = c,
            CapabilityChange::Pids(p) => plan.resources.pids = p,
        }
    }

    /// What it sets, for the operator: `memory limit 8 GiB (8589934592 bytes)`.
    pub fn describe(&self) -> String {
        match *self {
            CapabilityChange::Memory(b) => {
                format!("memory limit {} ({b} bytes)", human_bytes(b))
            }
            CapabilityChange::Cpus(c) => format!("CPU limit {c} CPUs"),
            CapabilityChange::Pids(p) => format!("process limit {p} pids"),
        }
    }
}

/// `8589934592` → `8 GiB`, `1610612736` → `1.5 GiB`.
fn human_bytes(b: u64) -> String {
    for (unit, shift) in [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)] {
        let whole = 1u64 << shift;
        if b >= whole {
            let v = format!("{:.2}", b as f64 / whole as f64);
            return format!("{} {unit}", v.trim_end_matches('0').trim_end_matches('.'));
        }
    }
    format!("{b} B")
}

/// What a capability request of `kind` with `detail` sets, `Ok(None)` for a
/// kind that is never applied automatically (package, tool, …), or why a
/// resource kind's detail cannot be applied.
pub fn parse_capability(kind: &str, detail: &str) -> Result<Option<CapabilityChange>, String> {
    let kind = kind.trim().to_ascii_lowercase();
    match kind.as_str() {
        "memory" | "mem" | "ram" => parse_memory(detail).map(Some),
        "cpu" | "cpus" | "cores" => parse_cpus(detail).map(Some),
        "pids" | "processes" | "procs" => parse_pids(detail).map(Some),
        _ => Ok(None),
    }
}

/// The first number in `text` and the word right after it (`"8 GiB memory"`
/// → `(8.0, "gib")`, `"2.5cpus"` → `(2.5, "cpus")`).
fn first_quantity(text: &str) -> Option<(f64, String)> {
    let start = text.find(|c: char| c.is_ascii_digit())?;
    let rest = &text[start..];
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let number: f64 = rest[..end].trim_end_matches('.').parse().ok()?;
    let unit: String = rest[end..]
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_alphabetic())
        .collect();
    Some((number, unit.to_ascii_lowercase()))
}

fn parse_memory(detail: &str) -> Result<CapabilityChange, String> {
    let hint = "write the size with a unit, e.g. \"8 GiB\" or \"512 MiB\"";
    let (n, unit) = first_quantity(detail).ok_or_else(|| format!("no size in it ({hint})"))?;
    let shift = match unit.as_str() {
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(format!("no size unit after the number ({hint})")),
    };
    let bytes = (n * (1u64 << shift) as f64).round();
    if !(bytes >= MIN_MEMORY as f64 && bytes <= MAX_MEMORY as f64) {
        return Err("the size must be between 64 MiB and 1 TiB".into());
    }
    Ok(CapabilityChange::Memory(bytes as u64))
}

fn parse_cpus(detail: &str) -> Result<CapabilityChange, String> {
    let (n, _) = first_quantity(detail)
        .ok_or_else(|| "no CPU count in it (write it like \"4 CPUs\" or \"2.5\")".to_owned())?;
    if !(n > 0.0 && n <= MAX_CPUS) {
        return Err(format!(
            "the CPU count must be above 0 and at most {MAX_CPUS}"
        ));
    }
    Ok(CapabilityChange::Cpus(n))
}

fn parse_pids(detail: &str) -> Result<CapabilityChange, String> {
    let (n, _) = first_quantity(detail)
        .ok_or_else(|| "no process count in it (write it like \"4096 pids\")".to_owned())?;
    if n.fract() != 0.0 || n < 1.0 || n > MAX_PIDS as f64 {
        return Err(format!(
            "the process count must be a whole number from 1 to {MAX_PIDS}"
        ));
    }
    Ok(CapabilityChange::Pids(n as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(kind: &str, detail: &str) -> CapabilityChange {
        parse_capability(kind, detail).unwrap().unwrap()
    }

    #[test]
    fn reads_what_the_tool_description_invites() {
        // The tool's own example, and the spellings agents use.
        assert_eq!(
            ok("memory", "8 GiB memory"),
            CapabilityChange::Memory(8 << 30)
        );
        assert_eq!(ok("memory", "8GiB"), CapabilityChange::Memory(8 << 30));
        assert_eq!(
            ok("Memory", "at least 1.5 GB of RAM"),
            CapabilityChange::Memory(3 << 29)
        );
        assert_eq!(ok("ram", "512 MiB"), CapabilityChange::Memory(512 << 20));
        assert_eq!(ok("cpu", "4 CPUs"), CapabilityChange::Cpus(4.0));
        assert_eq!(ok("cpus", "2.5"), CapabilityChange::Cpus(2.5));
        assert_eq!(ok("pids", "4096 processes"), CapabilityChange::Pids(4096));
    }

    #[test]
    fn refuses_what_it_cannot_apply_and_says_why() {
        for (kind, detail, why) in [
            ("memory", "lots of memory", "no size"),
            ("memory", "8", "unit"),
            ("memory", "8 bananas", "unit"),
            ("memory", "2 TiB", "between"),
            ("memory", "1 MiB", "between"),
            ("cpu", "many", "no CPU count"),
            ("cpu", "0 cpus", "above 0"),
            ("pids", "1.5", "whole number"),
        ] {
            let err = parse_capability(kind, detail).unwrap_err();
            assert!(err.contains(why), "{kind} {detail:?}: {err}");
        }
        assert_eq!(parse_capability("package", "apt package ripgrep"), Ok(None));
    }

    #[test]
    fn describes_exactly_what_is_set() {
        assert_eq!(
            CapabilityChange::Memory(8 << 30).describe(),
            "memory limit 8 GiB (8589934592 bytes)"
        );
        assert_eq!(
            CapabilityChange::Memory(3 << 29).describe(),
            "memory limit 1.5 GiB (1610612736 bytes)"
        );
        assert_eq!(CapabilityChange::Cpus(2.5).describe(), "CPU limit 2.5 CPUs");
    }
}
