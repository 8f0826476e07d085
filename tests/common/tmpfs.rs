//! A tmpfs mounted for a test (needs root and `mount`, as CI and the developers' machines have),
//! to make a disk fill up on demand: [`Tmpfs::resize`] shrinks or grows it in place (`mount -o
//! remount,size=`), so a node's data can be left with no room and then given room back.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` bytes at `path` (created if missing).
    pub fn mount(path: &Path, size: u64) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(path).map_err(|e| format!("create {}: {e}", path.display()))?;
        run_mount(
            &["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"],
            path,
        )?;
        Ok(Tmpfs {
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sets the file system's size; refused (Err) below what it holds.
    pub fn resize(&self, size: u64) -> Result<(), String> {
        run_mount(&["-o", &format!("remount,size={size}")], &self.path)
    }

    /// Bytes in use.
    pub fn used(&self) -> u64 {
        let output = Command::new("df")
            .args(["-B1", "--output=used"])
            .arg(&self.path)
            .output()
            .expect("run df");
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .nth(1)
            .and_then(|line| line.trim().parse().ok())
            .unwrap_or_else(|| panic!("df of {}: {output:?}", self.path.display()))
    }
}

fn run_mount(args: &[&str], path: &Path) -> Result<(), String> {
    let output = Command::new("mount")
        .args(args)
        .arg(path)
        .output()
        .map_err(|e| format!("run mount: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "mount {args:?} {}: {}",
            path.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

impl Drop for Tmpfs {
    /// Lazily: processes still holding files on it keep them until they exit.
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}
