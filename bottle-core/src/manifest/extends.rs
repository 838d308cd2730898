//! `extends`: a bottle's chain of parents, read leaf first and merged
//! root first (maps merge by key, lists and scalars replace); cycles and
//! missing parents are errors placed at the key that names them.

use std::fs;

use camino::{Utf8Path, Utf8PathBuf};

use super::bottle::{validate_bottle, validate_merged};
use super::diagnostics::{bad_name, key_position, parse};
use super::loader::read;
use super::{valid_name, BottleFile, LoadedBottle, Loader};
use crate::error::{Error, Result};

impl Loader {
    /// Load bottle `name` (named by `referrer`, for errors) with its
    /// `extends` chain merged.
    pub(super) fn load_bottle_from(
        &self,
        name: &str,
        referrer: Option<&Utf8Path>,
    ) -> Result<LoadedBottle> {
        let mut chain: Vec<Utf8PathBuf> = Vec::new();
        let mut names: Vec<String> = Vec::new();
        let mut tables: Vec<toml::Table> = Vec::new();
        let mut next = Some((name.to_owned(), referrer.map(Utf8Path::to_owned)));
        while let Some((n, from)) = next.take() {
            if !valid_name(&n) {
                return Err(bad_name("bottle", &n, from.as_deref()));
            }
            let path = self.home.bottles_dir().join(format!("{n}.toml"));
            if names.contains(&n) {
                let mut cycle = names.clone();
                cycle.push(n.clone());
                return Err(Error::Manifest {
                    file: from.unwrap_or(path),
                    line: None,
                    column: None,
                    message: format!("`extends` forms a cycle: {}", cycle.join(" -> ")),
                    fix: "remove `extends` from one bottle in the cycle".into(),
                });
            }
            if !path.is_file() {
                if let Some(from) = from {
                    let key = if chain.is_empty() {
                        "bottle"
                    } else {
                        "extends"
                    };
                    let (line, column) = {
                        let text = fs::read_to_string(&from).unwrap_or_default();
                        key_position(&text, key)
                    };
                    let names = self.bottle_names();
                    return Err(Error::Manifest {
                        file: from,
                        line,
                        column,
                        message: format!(
                            "`{key} = \"{n}\"` names a bottle that does not exist ({path})"
                        ),
                        fix: if names.is_empty() {
                            format!("create {path} (bottles live only in $BOTTLE_HOME/bottles/)")
                        } else {
                            format!("create {path} or use one of: {}", names.join(", "))
                        },
                    });
                }
                return Err(Error::NotFound {
                    kind: "bottle",
                    name: n,
                    searched: vec![path],
                    available: self.bottle_names(),
                });
            }
            let text = read(&path)?;
            let file: BottleFile = parse(&path, &text)?;
            validate_bottle(&path, &text, &file)?;
            let table: toml::Table = parse(&path, &text)?;
            next = file.extends.clone().map(|p| (p, Some(path.clone())));
            names.push(n);
            chain.push(path);
            tables.push(table);
        }
        let mut merged = toml::Table::new();
        for t in tables.into_iter().rev() {
            merge(&mut merged, t);
        }
        merged.remove("extends");
        let file: BottleFile = merged
            .try_into()
            .map_err(|e: toml::de::Error| Error::Manifest {
                file: chain[0].clone(),
                line: None,
                column: None,
                message: format!("after merging `extends`: {}", e.message()),
                fix: "check the parent bottles".into(),
            })?;
        validate_merged(&chain[0], &file)?;
        Ok(LoadedBottle {
            name: name.to_owned(),
            chain,
            file,
        })
    }
}

fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}
