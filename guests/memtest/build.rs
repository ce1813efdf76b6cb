//! Link the program as a static Linux executable at 0x400000 (linux.x), without its
//! debug info (it goes into the guest's initramfs).
fn main() {
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("none") {
        let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap();
        println!("cargo:rustc-link-arg-bins=-T{dir}/linux.x");
        println!("cargo:rustc-link-arg-bins=--strip-debug");
        println!("cargo:rustc-link-arg-bins=-zmax-page-size=4096");
        println!("cargo:rerun-if-changed=linux.x");
    }
}
