//! Where the shards' WALs live (`[storage] wal_dir`, by default the storage directory), noted
//! in the storage directory. The checkpoints stay in the storage directory; a server started
//! with its WAL setting pointing somewhere the log is not would start from the checkpoints
//! alone and silently lose every record after them. So start-up compares the setting with
//! the note and refuses such a start, with what to do.

use crate::storage::lsm::fsio;
use std::path::{Path, PathBuf};

/// The note's file in the storage directory: `.` (the WALs are in the storage directory,
/// wherever it is moved) or the WAL root's absolute path.
pub const WAL_LOCATION_FILE: &str = "wal-location";

/// What the note says for a WAL root inside the storage directory.
const IN_STORAGE_DIR: &str = ".";

/// Whether `root` holds any shard's WAL file (`shard-*/wal/*`).
fn holds_wal(root: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(root) else { return false };
    entries.flatten().any(|entry| {
        entry.file_name().to_string_lossy().starts_with("shard-")
            && std::fs::read_dir(entry.path().join("wal")).is_ok_and(|mut files| files.next().is_some())
    })
}

/// `dir` as an absolute path without symbolic links; one that does not exist yet as an
/// absolute path (nothing is created before the check passes).
fn resolved(dir: &Path) -> Result<PathBuf, String> {
    match dir.canonicalize() {
        Ok(path) => Ok(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::path::absolute(dir).map_err(|e| format!("resolving {}: {e}", dir.display()))
        }
        Err(e) => Err(format!("resolving {}: {e}", dir.display())),
    }
}

/// Creates `dir` if needed and resolves it.
fn created(dir: &Path) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    resolved(dir)
}

/// Checks that the WALs are where the setting puts them (`wal_root`), and notes that place
/// in `storage_dir`. Refused, with the reason: the log was last written elsewhere, is still
/// there, and `wal_root` holds none. A root that already holds a log (moved there by the
/// operator) or a new venue is accepted; the note then follows the setting.
pub fn check_and_note(storage_dir: &Path, wal_root: &Path) -> Result<(), String> {
    let (storage, root) = (resolved(storage_dir)?, resolved(wal_root)?);
    let note_path = storage.join(WAL_LOCATION_FILE);
    let old_note = match std::fs::read_to_string(&note_path) {
        Ok(text) => Some(text.trim().to_string()),
        // Before the setting existed, and on a new venue, the log was in the storage directory.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(format!("reading {}: {e}", note_path.display())),
    };
    let noted = match old_note.as_deref() {
        None | Some(IN_STORAGE_DIR) => storage.clone(),
        Some(other) => PathBuf::from(other),
    };
    if noted != root && !holds_wal(&root) && holds_wal(&noted) {
        return Err(format!(
            "the shards' WALs are in {}, but the settings put them in {} ([storage] wal_dir, or the storage \
             directory without it), which holds none: move the shard-*/wal directories there, or set wal_dir back \
             (starting without them would lose every record after the last checkpoint)",
            noted.display(),
            root.display()
        ));
    }
    let (storage, root) = (created(storage_dir)?, created(wal_root)?);
    let note = if root == storage { IN_STORAGE_DIR.to_string() } else { root.display().to_string() };
    if old_note.as_deref() != Some(note.as_str()) {
        fsio::write_atomic(&storage, WAL_LOCATION_FILE, format!("{note}\n").as_bytes(), false)
            .map_err(|e| format!("noting where the WALs are: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put_wal(root: &Path) {
        let wal = root.join("shard-0").join("wal");
        std::fs::create_dir_all(&wal).unwrap();
        std::fs::write(wal.join("00000000000000000001.wal"), b"records").unwrap();
    }

    fn note(storage: &Path) -> String {
        std::fs::read_to_string(storage.join(WAL_LOCATION_FILE)).unwrap().trim().to_string()
    }

    #[test]
    fn a_log_in_the_storage_directory_is_noted_as_such_and_moves_with_it() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        check_and_note(&data, &data).unwrap();
        assert_eq!(note(&data), ".");
        put_wal(&data);
        let moved = tmp.path().join("moved");
        std::fs::rename(&data, &moved).unwrap();
        check_and_note(&moved, &moved).unwrap();
        assert_eq!(note(&moved), ".");
    }

    #[test]
    fn pointing_the_setting_away_from_the_log_is_refused_and_changes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let (data, elsewhere) = (tmp.path().join("data"), tmp.path().join("fast-disk"));
        check_and_note(&data, &data).unwrap();
        put_wal(&data);
        let error = check_and_note(&data, &elsewhere).unwrap_err();
        assert!(error.contains("wal_dir") && error.contains("holds none"), "{error}");
        assert_eq!(note(&data), ".");
        assert!(!elsewhere.exists(), "a refused start creates nothing");
        // A log written before the note existed is found the same way.
        std::fs::remove_file(data.join(WAL_LOCATION_FILE)).unwrap();
        assert!(check_and_note(&data, &elsewhere).is_err());
    }

    #[test]
    fn a_log_moved_to_its_own_device_is_accepted_and_noted_and_moving_back_is_checked_too() {
        let tmp = tempfile::tempdir().unwrap();
        let (data, elsewhere) = (tmp.path().join("data"), tmp.path().join("fast-disk"));
        check_and_note(&data, &data).unwrap();
        put_wal(&data);
        std::fs::create_dir_all(&elsewhere).unwrap();
        std::fs::rename(data.join("shard-0"), elsewhere.join("shard-0")).unwrap();
        check_and_note(&data, &elsewhere).unwrap();
        let root = elsewhere.canonicalize().unwrap();
        assert_eq!(note(&data), root.display().to_string());
        // Back to the default while the log stays on its device: refused.
        let error = check_and_note(&data, &data).unwrap_err();
        assert!(error.contains(&root.display().to_string()), "{error}");
    }

    #[test]
    fn a_new_venue_may_put_its_log_anywhere() {
        let tmp = tempfile::tempdir().unwrap();
        let (data, elsewhere) = (tmp.path().join("data"), tmp.path().join("fast-disk"));
        check_and_note(&data, &elsewhere).unwrap();
        assert_eq!(note(&data), elsewhere.canonicalize().unwrap().display().to_string());
    }
}
