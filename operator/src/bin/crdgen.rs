//! `crdgen [DIR]`: writes every daprs CRD to `DIR/<name>.yaml` (default `crds`).

use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "crds".into()));
    std::fs::create_dir_all(&dir)?;
    for (name, yaml) in daprs_operator::crds::render_all()? {
        let path = dir.join(&name);
        std::fs::write(&path, yaml)?;
        println!("{}", path.display());
    }
    Ok(())
}
