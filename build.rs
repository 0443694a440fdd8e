//! Records the source revision for the `build_info` metric: PEREGRINE_REVISION when the build
//! sets it (a Docker build without .git can pass it in), else the git commit the binary was
//! built from, else `unknown`.

use std::process::Command;

fn main() {
    let from_environment = std::env::var("PEREGRINE_REVISION")
        .ok()
        .filter(|text| !text.is_empty());
    let revision = from_environment.unwrap_or_else(git_revision);
    println!("cargo:rustc-env=PEREGRINE_REVISION={revision}");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
    println!("cargo:rerun-if-env-changed=PEREGRINE_REVISION");
}

fn git_revision() -> String {
    Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|output| output.status.success())
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .map(|text| text.trim().to_owned())
        .filter(|text| !text.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}
