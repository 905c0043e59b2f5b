//! What a source remembers of the destinations it has served
//! (`snapdump replicas`): each replica's id, where it is, its newest
//! master and when it was last seen. Kept as `replicas.json` in the
//! source's catalog directory (a tree) or in `CATALOG/volumes/<uuid>/` (a
//! volume), replaced atomically under its own lock.

use super::protocol::Snap;
use anyhow::{anyhow, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// One destination served.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Replica {
    /// The destination's replica id (a volume's uuid, a target's own id).
    pub replica_id: String,
    /// "volume" or "target".
    pub kind: String,
    /// Where it was reached, as given to replicate.
    pub destination: String,
    /// Its newest master, as last seen (hello or acknowledgement).
    pub newest: Option<Snap>,
    /// When it was last seen, RFC 3339.
    pub updated: String,
}

/// A named snapshot (`snapdump pointer`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Pointer {
    /// The name (`master` is kept by replicate itself).
    pub name: String,
    /// The snapshot it names.
    pub snapshot: Snap,
}

/// The registry file's content.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Registry {
    /// Destinations, in the order first served.
    pub replicas: Vec<Replica>,
    /// Named snapshots; `master` is the newest snapshot a replica
    /// acknowledged.
    #[serde(default)]
    pub pointers: Vec<Pointer>,
}

impl Registry {
    /// Points `name` at `snapshot` (replacing an earlier one of that name).
    pub fn set_pointer(&mut self, name: &str, snapshot: Snap) {
        self.pointers.retain(|p| p.name != name);
        self.pointers.push(Pointer {
            name: name.to_string(),
            snapshot,
        });
        self.pointers.sort_by(|a, b| a.name.cmp(&b.name));
    }

    /// The snapshot `name` points at.
    pub fn pointer(&self, name: &str) -> Option<&Snap> {
        self.pointers
            .iter()
            .find(|p| p.name == name)
            .map(|p| &p.snapshot)
    }
}

/// The registry of a source, at `dir`.
pub struct RegistryFile {
    dir: PathBuf,
}

impl RegistryFile {
    /// The registry kept in `dir` (a catalog's source directory, or a
    /// volume's directory under the catalog root).
    pub fn new(dir: &Path) -> RegistryFile {
        RegistryFile {
            dir: dir.to_path_buf(),
        }
    }

    /// The registry of a volume source.
    pub fn for_volume(catalog_root: &Path, volume_uuid: &[u8; 16]) -> RegistryFile {
        RegistryFile::new(
            &catalog_root
                .join("volumes")
                .join(crate::ids::hex(volume_uuid)),
        )
    }

    fn path(&self) -> PathBuf {
        self.dir.join("replicas.json")
    }

    /// Reads the registry (empty when there is none).
    pub fn load(&self) -> Result<Registry> {
        match std::fs::read(self.path()) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| {
                anyhow!(
                    "{} is damaged ({e}); move it away to start a new record of replicas",
                    self.path().display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Registry::default()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", self.path().display())),
        }
    }

    /// Changes the registry under its lock and replaces it atomically.
    pub fn update(&self, f: impl FnOnce(&mut Registry)) -> Result<Registry> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create {}", self.dir.display()))?;
        let _lock = crate::lock::acquire(
            &self.dir.join("replicas.lock"),
            "the record of replicas",
            crate::lock::Wait::Yes,
        )?;
        let mut r = self.load()?;
        f(&mut r);
        crate::atomic::replace_file(&self.path(), &serde_json::to_vec_pretty(&r)?)?;
        Ok(r)
    }

    /// Records an acknowledged snapshot: `replica_id` holds it, and it is
    /// the `master` pointer if it is the newest one acknowledged.
    pub fn acked(
        &self,
        replica_id: &str,
        kind: &str,
        destination: &str,
        snapshot: Snap,
    ) -> Result<()> {
        self.saw(replica_id, kind, destination, Some(snapshot.clone()))?;
        self.update(|r| {
            if r.pointer("master").is_none_or(|m| m.id <= snapshot.id) {
                r.set_pointer("master", snapshot);
            }
        })?;
        Ok(())
    }

    /// Records that `replica_id` at `destination` holds `newest`.
    pub fn saw(
        &self,
        replica_id: &str,
        kind: &str,
        destination: &str,
        newest: Option<Snap>,
    ) -> Result<()> {
        let now = crate::tree::Time::now().rfc3339();
        self.update(|r| {
            let entry = Replica {
                replica_id: replica_id.to_string(),
                kind: kind.to_string(),
                destination: destination.to_string(),
                newest,
                updated: now,
            };
            match r.replicas.iter_mut().find(|x| x.replica_id == replica_id) {
                Some(x) => *x = entry,
                None => r.replicas.push(entry),
            }
        })?;
        Ok(())
    }

    /// Forgets a replica; false when it was not recorded.
    pub fn forget(&self, replica_id: &str) -> Result<bool> {
        let mut found = false;
        self.update(|r| {
            let before = r.replicas.len();
            r.replicas
                .retain(|x| x.replica_id != replica_id && !x.replica_id.starts_with(replica_id));
            found = r.replicas.len() != before;
        })?;
        Ok(found)
    }
}
