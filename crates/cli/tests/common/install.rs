//! Installing what a test needs: apt packages through the suite's one install lock
//! (`herd_testkit::install`), and Python tools from PyPI in venvs of their own.

use std::path::Path;
use std::process::Command;

pub use herd_testkit::install::{apt_install, install_lock};

/// A Python tool from PyPI in its own venv under the build directory (made once, under the
/// install lock); returns the path of its `bin/` directory. `requirement` pins the version.
pub fn pip_tool(name: &str, requirement: &str, binary: &str) -> Result<std::path::PathBuf, String> {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-venv"));
    let bin = venv.join("bin");
    let ready = venv.join(format!(".installed-{}", requirement.replace(['=', '<', '>', ' '], "_")));
    if ready.exists() && bin.join(binary).exists() {
        return Ok(bin);
    }
    let _one_installer = install_lock();
    if ready.exists() && bin.join(binary).exists() {
        return Ok(bin);
    }
    let run = |program: &Path, args: &[&str]| -> Result<(), String> {
        let output = Command::new(program).args(args).output().map_err(|e| format!("{}: {e}", program.display()))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!("{} {} failed: {}", program.display(), args.join(" "), String::from_utf8_lossy(&output.stderr)))
        }
    };
    run(Path::new("python3"), &["-m", "venv", &venv.display().to_string()])?;
    run(&bin.join("pip"), &["install", "-q", "--disable-pip-version-check", requirement])?;
    std::fs::write(&ready, requirement).map_err(|e| e.to_string())?;
    Ok(bin)
}
