//! Man pages from the clap types (clap_mangen, as coreos-installer does):
//! one page for the program and one per subcommand (`firstboot-status.8`).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Writes the pages of `cmd` into `dir` (section `section`); returns them.
pub fn write_pages(cmd: clap::Command, section: &str, dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = cmd.get_name().to_string();
    let mut written = Vec::new();
    let mut page = |c: clap::Command, title: String| -> Result<()> {
        let mut buf = Vec::new();
        clap_mangen::Man::new(c)
            .title(title.clone())
            .section(section)
            .render(&mut buf)
            .with_context(|| format!("rendering the {title} man page"))?;
        let p = dir.join(format!("{title}.{section}"));
        flypack_contracts::atomic::write_atomic(&p, &buf, 0o644)?;
        written.push(p);
        Ok(())
    };
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        page(sub.clone(), format!("{name}-{}", sub.get_name()))?;
    }
    page(cmd, name)?;
    Ok(written)
}
