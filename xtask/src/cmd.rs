//! Running commands: echo them, run them, turn a failure into a message.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The result of a task: `Err` carries the message to print.
pub type Result<T = ()> = std::result::Result<T, String>;

/// A command line for messages: `program arg arg`.
pub fn describe(c: &Command) -> String {
    let mut s = c.get_program().to_string_lossy().into_owned();
    for a in c.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// A command `program args...` run in `dir`.
pub fn command<I, S>(dir: &Path, program: &str, args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut c = Command::new(program);
    c.args(args).current_dir(dir);
    c
}

/// Prints `c` as a shell line, with its directory.
fn echo(c: &Command) {
    match c.get_current_dir().map(Path::display) {
        Some(d) => eprintln!("$ (cd {d} && {})", describe(c)),
        None => eprintln!("$ {}", describe(c)),
    }
}

/// Runs `c` with inherited output, after echoing it; fails unless it exits 0.
pub fn run(c: &mut Command) -> Result {
    echo(c);
    let status = c
        .stdin(Stdio::null())
        .status()
        .map_err(|e| format!("cannot start `{}`: {e}", describe(c)))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{}` failed ({status})", describe(c)))
    }
}

/// Runs `c` like [`run`], also returning its standard output (shown as it
/// comes, on standard error).
pub fn run_capture(c: &mut Command) -> Result<String> {
    use std::io::{BufRead, BufReader};
    echo(c);
    let mut child = c
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start `{}`: {e}", describe(c)))?;
    let mut out = String::new();
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            let line = line.map_err(|e| format!("reading `{}`: {e}", describe(c)))?;
            eprintln!("{line}");
            out.push_str(&line);
            out.push('\n');
        }
    }
    let status = child
        .wait()
        .map_err(|e| format!("waiting for `{}`: {e}", describe(c)))?;
    if status.success() {
        Ok(out)
    } else {
        Err(format!("`{}` failed ({status})", describe(c)))
    }
}

/// Runs `c` quietly and returns its standard output if it exits 0.
pub fn output(c: &mut Command) -> Result<String> {
    let out = c
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot start `{}`: {e}", describe(c)))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("`{}` failed ({})", describe(c), out.status))
    }
}

/// True if `c` runs and exits 0; its output is discarded (a probe such as
/// `cargo fuzz --version`).
pub fn succeeds(c: &mut Command) -> bool {
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The path of `program` if it is an executable file on `PATH`.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}
