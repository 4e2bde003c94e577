//! The server's own small disk: an ext4 filesystem in a sparse file, mounted through a
//! loop device (needs root; a tmpfs of the same size is the fallback), which the soak
//! fills up with a filler file and frees again.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A mounted filesystem, unmounted when dropped.
pub struct SmallDisk {
    pub mount_point: PathBuf,
    pub kind: &'static str,
    image: Option<PathBuf>,
    /// Keep the image after unmounting (to look at the archive afterwards).
    pub keep_image: bool,
}

fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(program).args(args).output()?;
    anyhow::ensure!(
        out.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

impl SmallDisk {
    /// Mounts a filesystem of `size_mib` at `<base>/serverfs`.
    pub fn mount(base: &Path, size_mib: u64) -> anyhow::Result<SmallDisk> {
        let mount_point = base.join("serverfs");
        std::fs::create_dir_all(&mount_point)?;
        let image = base.join("serverfs.img");
        let point = mount_point.display().to_string();
        let loop_mount = (|| {
            run(
                "truncate",
                &["-s", &format!("{size_mib}M"), &image.display().to_string()],
            )?;
            // -m 0: no blocks reserved for root (the server runs as root here).
            run(
                "mkfs.ext4",
                &["-q", "-F", "-m", "0", &image.display().to_string()],
            )?;
            run(
                "mount",
                &["-o", "loop", &image.display().to_string(), &point],
            )
        })();
        match loop_mount {
            Ok(()) => Ok(SmallDisk {
                mount_point,
                kind: "ext4 on a loop device",
                image: Some(image),
                keep_image: false,
            }),
            Err(loop_error) => {
                let _ = std::fs::remove_file(&image);
                run(
                    "mount",
                    &[
                        "-t",
                        "tmpfs",
                        "-o",
                        &format!("size={size_mib}m"),
                        "tmpfs",
                        &point,
                    ],
                )
                .map_err(|e| anyhow::anyhow!("no loop device ({loop_error}) and no tmpfs ({e})"))?;
                Ok(SmallDisk {
                    mount_point,
                    kind: "tmpfs",
                    image: None,
                    keep_image: false,
                })
            }
        }
    }

    /// Free bytes for the server, from statvfs (`df`).
    pub fn available(&self) -> anyhow::Result<u64> {
        let out = Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(&self.mount_point)
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .nth(1)
            .and_then(|line| line.trim().parse().ok())
            .ok_or_else(|| anyhow::anyhow!("cannot read df output: {text}"))
    }

    fn filler(&self) -> PathBuf {
        self.mount_point.join("filler")
    }

    /// Takes all the free space but `leave` bytes; returns how much it took.
    pub fn fill(&self, leave: u64) -> anyhow::Result<u64> {
        let take = self.available()?.saturating_sub(leave);
        let filler = self.filler().display().to_string();
        if run("fallocate", &["-l", &take.to_string(), &filler]).is_err() {
            // tmpfs before Linux 3.5 and some others: write it out.
            let file = std::fs::File::create(self.filler())?;
            file.set_len(0)?;
            let mut file = std::io::BufWriter::new(file);
            let block = vec![0u8; 1 << 20];
            let mut written = 0;
            while written < take {
                let n = block.len().min((take - written) as usize);
                if std::io::Write::write_all(&mut file, &block[..n]).is_err() {
                    break;
                }
                written += n as u64;
            }
        }
        Ok(take)
    }

    pub fn free(&self) -> anyhow::Result<()> {
        match std::fs::remove_file(self.filler()) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = run("umount", &["-l", &self.mount_point.display().to_string()]);
        if let Some(image) = self.image.as_ref().filter(|_| !self.keep_image) {
            let _ = std::fs::remove_file(image);
        }
    }
}
