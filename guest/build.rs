//! Links the guest programs as freestanding images: with `link.ld` (flat images at
//! address 0), or, for the guests in `OWN_SCRIPTS`, with a linker script of their own.
//! The `[[bin]]` targets are read from Cargo.toml (`autobins` is off: they are all).

/// Guests linked with their own script: (bin name, script, extra linker arguments).
const OWN_SCRIPTS: &[(&str, &str, &[&str])] = &[
    ("multiboot", "multiboot.ld", &["-Wl,-z,max-page-size=0x1000"]),
    ("multiboot2", "multiboot.ld", &["-Wl,-z,max-page-size=0x1000"]),
    ("pcboot", "pcboot.ld", &["-Wl,-z,max-page-size=0x1000"]),
];

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo");
    for arg in ["-nostartfiles", "-nostdlib", "-static", "-Wl,--build-id=none", "-Wl,--gc-sections"] {
        println!("cargo:rustc-link-arg-bins={arg}");
    }
    let manifest = std::fs::read_to_string(format!("{dir}/Cargo.toml")).expect("Cargo.toml is readable");
    for bin in bin_names(&manifest) {
        let (script, extra) = match OWN_SCRIPTS.iter().find(|(name, _, _)| *name == bin) {
            Some((_, script, extra)) => (*script, *extra),
            None => ("link.ld", &[][..]),
        };
        println!("cargo:rustc-link-arg-bin={bin}=-Wl,-T,{dir}/{script}");
        for arg in extra {
            println!("cargo:rustc-link-arg-bin={bin}={arg}");
        }
    }
    println!("cargo:rerun-if-changed=Cargo.toml");
    println!("cargo:rerun-if-changed=link.ld");
    for (_, script, _) in OWN_SCRIPTS {
        println!("cargo:rerun-if-changed={script}");
    }
}

/// The names of the manifest's `[[bin]]` targets.
fn bin_names(manifest: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut in_bin = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_bin = line == "[[bin]]";
        } else if in_bin
            && let Some((key, value)) = line.split_once('=')
            && key.trim() == "name"
        {
            names.push(value.trim().trim_matches('"').to_string());
        }
    }
    names
}
