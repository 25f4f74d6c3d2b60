//! Small filesystems for disk-full tests: a tmpfs mounted inside a test's
//! temporary directory, unmounted when the guard drops, however the test
//! ends. Mounting needs root; tests skip loudly without it, except under
//! `CI=true`, where that is a failure.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A mounted tmpfs; unmounted (lazily) on drop.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `bytes` at `at` (created if missing).
    pub fn mount(at: &Path, bytes: u64) -> anyhow::Result<Tmpfs> {
        std::fs::create_dir_all(at)?;
        let status =
            Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"]).arg(at).status()?;
        anyhow::ensure!(status.success(), "mount -t tmpfs failed ({status}); this test needs root");
        Ok(Tmpfs(at.to_owned()))
    }

    /// Whether this machine lets the test mount one: `Ok(false)` means skip
    /// (said loudly); under `CI=true` not being able to is an error.
    pub fn available(test: &str) -> anyhow::Result<bool> {
        let probe = tempfile::tempdir()?;
        match Tmpfs::mount(&probe.path().join("vol"), 1 << 20) {
            Ok(_mounted) => Ok(true),
            Err(e) => {
                anyhow::ensure!(std::env::var("CI").as_deref() != Ok("true"), "CI=true but cannot mount a tmpfs: {e}");
                eprintln!("\n!!! SKIPPING {test}: {e}\n");
                Ok(false)
            }
        }
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Bytes available to unprivileged writers on the volume holding `path`.
pub fn free_bytes(path: &Path) -> anyhow::Result<u64> {
    Ok(sluice_storage::disk_space::available_bytes(path)?)
}

/// Fills the volume at `volume` with a file until only `leave` bytes are
/// free; returns the file (remove it to free the space again).
pub fn fill(volume: &Path, leave: u64) -> anyhow::Result<PathBuf> {
    let filler = volume.join("filler");
    let fill = free_bytes(volume)?.saturating_sub(leave);
    std::fs::write(&filler, vec![0u8; fill as usize])?;
    Ok(filler)
}
