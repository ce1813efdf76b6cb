//! Writes `board.x`, the linker-script fragment with this board's load address, and puts
//! it on the linker's search path of every binary that depends on this crate.
use std::{env, fs, path::PathBuf};

include!("src/layout.rs");

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    fs::write(
        out.join("board.x"),
        format!("KERNEL_LOAD_ADDR = {LOAD_ADDR:#x};\n"),
    )
    .expect("write board.x");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=src/layout.rs");
}
