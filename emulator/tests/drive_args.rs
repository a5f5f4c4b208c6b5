//! `yakvm run --drive` with arguments that cannot work: one message naming the problem,
//! a non-zero status, the file untouched, before any VM exists (so these run on the
//! host, without the module).

use std::path::{Path, PathBuf};
use std::process::Command;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("yakvm-drive-args-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs yakvm with `args`; returns (status, stderr).
fn yakvm(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_yakvm")).args(args).stdin(std::process::Stdio::null()).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn bad_drives_are_refused_with_one_clear_message() {
    let dir = scratch("bad");
    let kernel = dir.join("bzImage");
    std::fs::write(&kernel, b"not looked at: the drives are checked first").unwrap();
    let odd = dir.join("odd.img");
    std::fs::write(&odd, vec![0x5au8; 1000]).unwrap();
    let good = dir.join("good.img");
    std::fs::write(&good, vec![0xa5u8; 4096]).unwrap();
    let missing = dir.join("missing.img");
    let cases: Vec<(Vec<String>, String)> = vec![
        (vec![s(&missing).into()], format!("--drive {}: No such file or directory", s(&missing))),
        (vec![s(&odd).into()], format!("--drive {}: 1000 bytes, not a multiple of 512", s(&odd))),
        (vec![s(&dir).into()], format!("--drive {}: not a regular file", s(&dir))),
        (vec![format!("{},readonly=maybe", s(&good))], "unknown option 'readonly=maybe'".into()),
        (vec![s(&good).into(), s(&good).into()], format!("--drive {}: in use by another yakvm", s(&good))),
        (vec![s(&good).into(), format!("{},readonly=on", s(&good))], format!("--drive {}: in use by another yakvm", s(&good))),
    ];
    for (drives, want) in cases {
        let mut args = vec!["run", "--kernel", s(&kernel)];
        for d in &drives {
            args.extend(["--drive", d.as_str()]);
        }
        let (status, err) = yakvm(&args);
        assert_ne!(status, 0, "{drives:?}: {err}");
        assert!(err.contains(&want), "{drives:?}: wanted {want:?} in {err:?}");
        assert_eq!(err.trim_end().lines().count(), 1, "{drives:?}: one message: {err:?}");
    }
    // A drive on the seed machine.
    let (status, err) = yakvm(&["run", s(&kernel), "--drive", s(&good)]);
    assert_ne!(status, 0);
    assert!(err.contains("--drive: virtio disks are on the pc machine"), "{err}");
    assert_eq!(std::fs::read(&odd).unwrap(), vec![0x5au8; 1000], "files untouched");
    assert_eq!(std::fs::read(&good).unwrap(), vec![0xa5u8; 4096]);
    assert!(!missing.exists(), "a missing drive is not created");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A drive locked by another process (as another yakvm holds it) is refused.
#[test]
fn a_drive_locked_elsewhere_is_refused() {
    let dir = scratch("locked");
    let kernel = dir.join("bzImage");
    std::fs::write(&kernel, b"x").unwrap();
    let img = dir.join("disk.img");
    std::fs::write(&img, vec![1u8; 512]).unwrap();
    // flock(1) holds an exclusive lock while it runs `sleep`.
    let mut holder = Command::new("flock").args(["-x", s(&img), "sleep", "30"]).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (status, err) = yakvm(&["run", "--kernel", s(&kernel), "--drive", &format!("{},readonly=on", s(&img))]);
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert_ne!(status, 0);
    assert!(err.contains("in use by another yakvm"), "{err}");
    assert_eq!(std::fs::read(&img).unwrap(), vec![1u8; 512]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn help_describes_drive() {
    let out = Command::new(env!("CARGO_BIN_EXE_yakvm")).args(["run", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("--drive <FILE[,readonly=on]>"), "{help}");
    assert!(help.contains("/dev/vda"), "{help}");
}
