//! Loading the config directory: one file per network (see `rpod_wire::dnsconfig`).

use std::path::Path;

use rpod_wire::dnsconfig::{split_file_name, NetworkConfig, PID_FILE};

use crate::table::Network;

/// The result of reading the config directory: the networks that parsed (with their file
/// names), and (file name, message) for every file that did not.
#[derive(Debug, Default)]
pub struct Loaded {
    pub networks: Vec<(String, Network)>,
    pub errors: Vec<(String, String)>,
}

/// Reads every network file in `dir` (all regular files except the pid file and hidden or
/// temporary files). A malformed file is reported in `errors` and skipped.
pub fn load_dir(dir: &Path) -> std::io::Result<Loaded> {
    let mut out = Loaded::default();
    let mut names: Vec<String> = Vec::new();
    for ent in std::fs::read_dir(dir)? {
        let ent = ent?;
        let Ok(name) = ent.file_name().into_string() else {
            out.errors.push((String::new(), format!("{}: file name is not UTF-8", ent.path().display())));
            continue;
        };
        if name == PID_FILE || name.starts_with('.') || name.ends_with(".lock") || name.ends_with(".tmp") {
            continue;
        }
        match ent.file_type() {
            Ok(t) if t.is_file() => names.push(name),
            _ => continue,
        }
    }
    names.sort();
    for file in names {
        let path = dir.join(&file);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            // removed between the listing and the read: just gone
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                out.errors.push((file, format!("{}: {e}", path.display())));
                continue;
            }
        };
        match NetworkConfig::parse(&text) {
            Ok(config) => {
                let (name, internal) = split_file_name(&file);
                out.networks.push((file.clone(), Network { name: name.to_string(), internal, config }));
            }
            Err(e) => out.errors.push((file, format!("{}: {e}", path.display()))),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_file_is_skipped_others_load() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("good"), "10.0.0.1\nc1 10.0.0.2  web\n").unwrap();
        std::fs::write(d.path().join("priv%int"), "10.0.1.1\n").unwrap();
        std::fs::write(d.path().join("bad"), "10.0.0.1\nc1 10.0.0.2\n").unwrap();
        std::fs::write(d.path().join(PID_FILE), "123").unwrap();
        let l = load_dir(d.path()).unwrap();
        let names: Vec<(&str, bool)> = l.networks.iter().map(|(_, n)| (n.name.as_str(), n.internal)).collect();
        assert_eq!(names, vec![("good", false), ("priv", true)]);
        assert_eq!(l.errors.len(), 1);
        assert_eq!(l.errors[0].0, "bad");
        assert!(l.errors[0].1.contains("line 2"), "{:?}", l.errors);
    }
}
