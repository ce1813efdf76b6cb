//! Link as a Bulkhead native task, and embed the test guest the tools built
//! (`BULKHEAD_GUEST_FAULTSTORM`; an empty image when it is not set, e.g. for clippy).
fn main() {
    println!("cargo:rerun-if-env-changed=BULKHEAD_GUEST_FAULTSTORM");
    let out = std::env::var("OUT_DIR").unwrap();
    let guest = match std::env::var("BULKHEAD_GUEST_FAULTSTORM") {
        Ok(p) if !p.is_empty() => {
            println!("cargo:rerun-if-changed={p}");
            p
        }
        _ => {
            let p = format!("{out}/empty-guest.elf");
            std::fs::write(&p, b"").unwrap();
            p
        }
    };
    println!("cargo:rustc-env=FAULTSTORM_ELF={guest}");
    // A Linux guest: kernel Image, initramfs, device tree (empty files when not set).
    for (var, name) in [
        ("BULKHEAD_GUEST_LINUX_IMAGE", "LINUX_IMAGE"),
        ("BULKHEAD_GUEST_LINUX_INITRD", "LINUX_INITRD"),
        ("BULKHEAD_GUEST_LINUX_VMS", "LINUX_VMS"),
    ] {
        println!("cargo:rerun-if-env-changed={var}");
        let path = match std::env::var(var) {
            Ok(p) if !p.is_empty() => {
                println!("cargo:rerun-if-changed={p}");
                p
            }
            _ => {
                let p = format!("{out}/empty-{name}");
                std::fs::write(&p, b"").unwrap();
                p
            }
        };
        println!("cargo:rustc-env={name}={path}");
    }
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("none") {
        println!("cargo:rustc-link-arg-bins=-Ttask.x");
        println!("cargo:rustc-link-arg-bins=-Tdefmt.x");
    }
}
