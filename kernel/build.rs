//! Link settings for the bare-metal kernel, and the boot payload it embeds.
use std::env;

fn main() {
    println!("cargo:rerun-if-changed=link.x");
    println!("cargo:rerun-if-env-changed=BULKHEAD_PAYLOAD");
    if env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("none") {
        return;
    }
    let dir = env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rustc-link-search={dir}");
    println!("cargo:rustc-link-arg-bins=-Tlink.x");
    // defmt's section layout; needed per binary crate (see docs/design/logging.md).
    println!("cargo:rustc-link-arg-bins=-Tdefmt.x");
    match env::var("BULKHEAD_PAYLOAD") {
        Ok(p) => println!("cargo:rerun-if-changed={p}"),
        Err(_) => panic!(
            "BULKHEAD_PAYLOAD is not set: the kernel embeds the boot payload the tools pack. \
             Build with `cargo xtask build`."
        ),
    }
}
