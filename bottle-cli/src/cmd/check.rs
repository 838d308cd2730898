//! `bottle check`: validate every manifest, probe every backend, print a
//! table with fixes. Exit 2 when a manifest is invalid, 3 when no backend
//! is usable.

use bottle_core::manifest::AgentSource;
use bottle_core::plan::looks_like_secret;
use bottle_core::{DuctRunner, Loader, Probe, Result};
use camino::Utf8PathBuf;
use serde::Serialize;

use crate::registry::BACKENDS;
use crate::ui::table;
use crate::Cli;

/// Args.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON (schema_version 1).
    #[arg(long)]
    pub json: bool,
}

/// One manifest finding.
#[derive(Debug, Serialize)]
pub struct ManifestReport {
    /// `bottle` or `agent`.
    pub kind: &'static str,
    /// File.
    pub path: Utf8PathBuf,
    /// `ok`, `warning` or `error`.
    pub status: &'static str,
    /// What is wrong, if anything.
    pub message: Option<String>,
    /// What to do.
    pub fix: Option<String>,
}

/// One backend's probe.
#[derive(Debug, Serialize)]
pub struct BackendReport {
    /// Backend id.
    pub name: &'static str,
    /// `ready`, `unavailable` or `not-compiled`.
    pub status: &'static str,
    /// Version when ready.
    pub version: Option<String>,
    /// Notes when ready.
    pub notes: Vec<String>,
    /// Why not, when unavailable.
    pub why: Option<String>,
    /// How to fix.
    pub fix: Option<String>,
}

/// `bottle check --json` output.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Schema version (1).
    pub schema_version: u32,
    /// Manifest findings.
    pub manifests: Vec<ManifestReport>,
    /// Backend probes.
    pub backends: Vec<BackendReport>,
}

fn manifests(loader: &Loader) -> Vec<ManifestReport> {
    let mut out = Vec::new();
    for (kind, path) in loader.all_files() {
        let name = path.file_stem().unwrap_or_default().to_owned();
        let result = if kind == "bottle" {
            loader.load_bottle(&name).map(|b| {
                (
                    b.file.env.clone().unwrap_or_default(),
                    plaintext_routes(&b.file),
                    None,
                )
            })
        } else {
            let source = if path.starts_with(loader.home().agents_dir()) {
                AgentSource::Home
            } else {
                AgentSource::Repo
            };
            loader.load_agent_file(&path, source).and_then(|a| {
                let b = loader.load_bottle(&a.file.bottle).map_err(|e| match e {
                    bottle_core::Error::NotFound {
                        name, available, ..
                    } => bottle_core::Error::Manifest {
                        file: path.clone(),
                        line: None,
                        column: None,
                        message: format!("names bottle `{name}`, which does not exist"),
                        fix: if available.is_empty() {
                            format!("create {}/{name}.toml", loader.home().bottles_dir())
                        } else {
                            format!("use one of: {}", available.join(", "))
                        },
                    },
                    other => other,
                })?;
                Ok((
                    a.file.env.clone().unwrap_or_default(),
                    Vec::new(),
                    template_note(&b.file),
                ))
            })
        };
        match result {
            Ok((env, plaintext, note)) => {
                let suspicious: Vec<String> = env
                    .iter()
                    .filter(|(k, v)| looks_like_secret(k, v.raw()))
                    .map(|(k, _)| k.clone())
                    .collect();
                if !plaintext.is_empty() {
                    out.push(ManifestReport {
                        kind,
                        path: path.clone(),
                        status: "warning",
                        message: Some(format!(
                            "egress route {} sends its credential over plain HTTP (plaintext = true): anyone on the path can read it",
                            plaintext.join(", ")
                        )),
                        fix: Some("use the upstream's https port and drop `plaintext`".into()),
                    });
                }
                // said up front, before a start fails in the image build
                if let Some(n) = note {
                    out.push(ManifestReport {
                        kind,
                        path: path.clone(),
                        status: "ok",
                        message: Some(n),
                        fix: None,
                    });
                } else if suspicious.is_empty() && plaintext.is_empty() {
                    out.push(ManifestReport {
                        kind,
                        path: path.clone(),
                        status: "ok",
                        message: None,
                        fix: None,
                    });
                }
                if !suspicious.is_empty() {
                    out.push(ManifestReport {
                        kind,
                        path,
                        status: "warning",
                        message: Some(format!("env {} looks like a secret; the agent would hold it", suspicious.join(", "))),
                        fix: Some("put credentials in egress route auth or a git identity_file, never in [env]".into()),
                    });
                }
            }
            Err(e) => out.push(ManifestReport {
                kind,
                path,
                status: "error",
                message: Some(e.to_string()),
                fix: e.fix(),
            }),
        }
    }
    out
}

/// What building the agent image of a bottle's built-in template needs
/// (the `claude`/`codex` images install Node.js and the CLI from npm).
fn template_note(b: &bottle_core::manifest::BottleFile) -> Option<String> {
    let p = b.agent_provider.as_ref()?;
    if p.dockerfile.is_some() {
        return None;
    }
    super::start::template_build_note(p.template?)
}

/// `host:port` of every route that lets its `auth` go over plain HTTP.
fn plaintext_routes(b: &bottle_core::manifest::BottleFile) -> Vec<String> {
    b.egress
        .as_ref()
        .and_then(|e| e.routes.as_ref())
        .into_iter()
        .flatten()
        .filter(|r| r.plaintext == Some(true))
        .map(|r| {
            format!(
                "{}:{}",
                r.host,
                r.port.map_or("?".into(), |p| p.to_string())
            )
        })
        .collect()
}

/// `$BOTTLE_HOME/dlp/*.toml` (each on top of the built-in rules) and every
/// bottle's `egress.dlp_disable` ids.
fn dlp_rules(loader: &Loader) -> Vec<ManifestReport> {
    let dir = loader.home().dlp_dir();
    let mut out = Vec::new();
    let files = match bottle_dlp::rules::rule_files(dir.as_std_path()) {
        Ok(f) => f,
        Err(e) => {
            return vec![ManifestReport {
                kind: "dlp-rules",
                path: dir,
                status: "error",
                message: Some(e.to_string()),
                fix: Some("make the dir readable or remove it".into()),
            }]
        }
    };
    let mut broken = false;
    for f in files {
        let path = Utf8PathBuf::from(f.to_string_lossy().into_owned());
        match bottle_dlp::RuleSet::check_file(&f) {
            Ok(_) => out.push(ManifestReport {
                kind: "dlp-rules",
                path,
                status: "ok",
                message: None,
                fix: None,
            }),
            Err(e) => {
                broken = true;
                out.push(ManifestReport {
                    kind: "dlp-rules",
                    path,
                    status: "error",
                    message: Some(e.to_string()),
                    fix: Some("fix the rule (gitleaks format, Rust regex syntax; see docs/security.md) or remove the file".into()),
                });
            }
        }
    }
    if broken {
        return out;
    }
    let Ok(set) = bottle_dlp::RuleSet::load(Some(dir.as_std_path()), &[]) else {
        return out;
    };
    let known: std::collections::BTreeSet<&str> = set.known_ids().collect();
    for (kind, path) in loader.all_files() {
        if kind != "bottle" {
            continue;
        }
        let name = path.file_stem().unwrap_or_default().to_owned();
        let Ok(b) = loader.load_bottle(&name) else {
            continue;
        };
        let disable = b
            .file
            .egress
            .as_ref()
            .and_then(|e| e.dlp_disable.clone())
            .unwrap_or_default();
        let unknown: Vec<&str> = disable
            .iter()
            .map(String::as_str)
            .filter(|id| !known.contains(id))
            .collect();
        if !unknown.is_empty() {
            out.push(ManifestReport {
                kind: "bottle",
                path,
                status: "error",
                message: Some(format!(
                    "egress.dlp_disable names unknown DLP rule(s): {}",
                    unknown.join(", ")
                )),
                fix: Some(
                    "use rule ids from docs/security.md or from a file in $BOTTLE_HOME/dlp".into(),
                ),
            });
        }
    }
    out
}

fn backends() -> Vec<BackendReport> {
    let runner = DuctRunner;
    BACKENDS
        .iter()
        .map(|entry| match entry.make {
            None => BackendReport {
                name: entry.name,
                status: "not-compiled",
                version: None,
                notes: vec![],
                why: Some(format!(
                    "not compiled into this build (feature `{}`)",
                    entry.feature
                )),
                fix: Some(format!("rebuild with --features {}", entry.feature)),
            },
            Some(make) => match make().probe(&runner) {
                Probe::Ready {
                    version,
                    mut notes,
                    gvisor,
                } => BackendReport {
                    name: entry.name,
                    status: "ready",
                    version: Some(version),
                    notes: {
                        notes.extend(gvisor.note());
                        notes
                    },
                    why: None,
                    fix: None,
                },
                Probe::Unavailable { why, fix } => BackendReport {
                    name: entry.name,
                    status: "unavailable",
                    version: None,
                    notes: vec![],
                    why: Some(why),
                    fix: Some(fix),
                },
            },
        })
        .collect()
}

/// Run `bottle check`.
pub fn run(cli: &Cli, a: &Args) -> Result<u8> {
    let home = super::home(cli)?;
    let repo = std::env::current_dir()
        .ok()
        .and_then(|p| Utf8PathBuf::from_path_buf(p).ok());
    let loader = Loader::new(home.clone(), repo);
    let mut manifests = manifests(&loader);
    manifests.extend(dlp_rules(&loader));
    let report = Report {
        schema_version: 1,
        manifests,
        backends: backends(),
    };
    let bad_manifest = report.manifests.iter().any(|m| m.status == "error");
    let usable = report.backends.iter().any(|b| b.status == "ready");
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("report serializes")
        );
    } else {
        println!("manifests in {}", home.root());
        if report.manifests.is_empty() {
            println!("  none — run `bottle init` to create an example bottle and agent\n");
        } else {
            // the DETAIL column starts after the widest STATUS, KIND, FILE
            let col = |f: &dyn Fn(&ManifestReport) -> usize, head: &str| {
                report
                    .manifests
                    .iter()
                    .map(f)
                    .chain([head.len()])
                    .max()
                    .unwrap_or(0)
                    + 2
            };
            let pad = col(&|m| m.status.len(), "STATUS")
                + col(&|m| m.kind.len(), "KIND")
                + col(
                    &|m| m.path.file_name().unwrap_or("").chars().count(),
                    "FILE",
                );
            let rows: Vec<Vec<String>> = report
                .manifests
                .iter()
                .map(|m| {
                    let detail = match (&m.message, &m.fix) {
                        (Some(msg), Some(fix)) => format!("{msg}\n{:pad$}fix: {fix}", ""),
                        (Some(msg), None) => msg.clone(),
                        _ => String::new(),
                    };
                    vec![
                        m.status.to_owned(),
                        m.kind.to_owned(),
                        m.path.file_name().unwrap_or("").to_owned(),
                        detail,
                    ]
                })
                .collect();
            print!(
                "{}",
                indent(&table(&["STATUS", "KIND", "FILE", "DETAIL"], &rows))
            );
            println!();
        }
        println!("backends");
        // a `fix:` line starts in the DETAIL column, after BACKEND and STATUS
        let pad = ["BACKEND".len(), "STATUS".len()]
            .iter()
            .enumerate()
            .map(|(i, head)| {
                report
                    .backends
                    .iter()
                    .map(|b| if i == 0 { b.name.len() } else { b.status.len() })
                    .chain([*head])
                    .max()
                    .unwrap_or(0)
                    + 2
            })
            .sum::<usize>();
        let rows: Vec<Vec<String>> = report
            .backends
            .iter()
            .map(|b| {
                let detail = match b.status {
                    "ready" => {
                        let mut d = b.version.clone().unwrap_or_default();
                        if !b.notes.is_empty() {
                            d.push_str(&format!(" ({})", b.notes.join("; ")));
                        }
                        d
                    }
                    _ => format!(
                        "{}\n{:pad$}fix: {}",
                        b.why.clone().unwrap_or_default(),
                        "",
                        b.fix.clone().unwrap_or_default()
                    ),
                };
                vec![b.name.to_owned(), b.status.to_owned(), detail]
            })
            .collect();
        print!(
            "{}",
            indent(&table(&["BACKEND", "STATUS", "DETAIL"], &rows))
        );
        if !usable {
            println!("\nno backend is usable here: apply one of the fixes above");
        }
    }
    Ok(if bad_manifest {
        2
    } else if !usable {
        3
    } else {
        0
    })
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("  {l}\n")).collect()
}
