// SPDX-License-Identifier: GPL-2.0
//! Character-device plumbing the 6.12 `kernel` crate lacks: a misc device (`/dev/yakvm`)
//! and anonymous-inode file descriptors (VM and vCPU descriptors), each backed by an
//! `Arc<T>` whose `T` implements [`FileOps`].
//!
//! `struct miscdevice` is not in the kernel crate's bindings; [`RawMiscDevice`] mirrors
//! it and `glue.c` asserts the same offsets against the real header.

use super::glue;
use super::mem::PageRef;
use core::marker::PhantomData;
use kernel::bindings;
use kernel::ffi::{c_char, c_int, c_long, c_uint, c_ulong, c_void};
use kernel::prelude::*;
use kernel::sync::{Arc, ArcBorrow};

/// What a yakvm file descriptor does. The object lives in an `Arc` owned by the open file
/// and dropped at its last close.
pub(crate) trait FileOps: Send + Sync + Sized + 'static {
    /// `ioctl(fd, cmd, arg)`; the value returned becomes the syscall's result.
    fn ioctl(this: ArcBorrow<'_, Self>, cmd: u32, arg: usize) -> Result<isize>;

    /// `mmap(fd)`; refused unless implemented.
    fn mmap(_this: ArcBorrow<'_, Self>, _vma: &mut Vma) -> Result {
        Err(ENODEV)
    }
}

/// A [`FileOps`] object made when its device node is opened, from the context given at
/// registration.
pub(crate) trait OpenFileOps: FileOps {
    type Context: Send + Sync;
    fn open(context: &Arc<Self::Context>) -> Result<Arc<Self>>;
}

/// A `file_operations` table in static memory.
#[repr(transparent)]
pub(crate) struct FileOperations(bindings::file_operations);

// SAFETY: the table is immutable after construction; the raw pointers it holds (module
// and functions) are valid from any thread.
unsafe impl Sync for FileOperations {}

struct Vtable<T>(PhantomData<T>);

impl<T: FileOps> Vtable<T> {
    const fn build(open: OpenFn) -> FileOperations {
        // SAFETY: `file_operations` is a C struct of nullable pointers and integers, for
        // which all-zero is the valid "not implemented" value.
        let mut ops: bindings::file_operations = unsafe { core::mem::zeroed() };
        // Our own `struct module` (only its address): the kernel takes a module reference
        // for every open file, so yakvm cannot be unloaded under one.
        ops.owner = core::ptr::addr_of_mut!(bindings::__this_module);
        ops.unlocked_ioctl = Some(ioctl::<T>);
        ops.mmap = Some(mmap::<T>);
        ops.release = Some(release::<T>);
        ops.llseek = Some(bindings::noop_llseek);
        // Only device nodes are opened through `open`; anon fds come ready-made.
        ops.open = open;
        FileOperations(ops)
    }
    const ANON: FileOperations = Self::build(None);
}

impl<T: OpenFileOps> Vtable<T> {
    const NODE: FileOperations = Self::build(Some(open_trampoline::<T>));
}

type OpenFn = Option<unsafe extern "C" fn(*mut bindings::inode, *mut bindings::file) -> c_int>;

/// Recovers the object of an open file.
///
/// # Safety
/// `file` is an open file made by this module with `Vtable::<T>`, so its private data
/// is an `Arc<T>` pointer that stays owned by the file until `release`.
unsafe fn object<'a, T: FileOps>(file: *mut bindings::file) -> ArcBorrow<'a, T> {
    // SAFETY: the caller's contract.
    unsafe { ArcBorrow::from_raw(glue::yakvm_file_private(file).cast::<T>()) }
}

fn to_c(result: Result<isize>) -> c_long {
    match result {
        Ok(value) => value as c_long,
        Err(e) => e.to_errno() as c_long,
    }
}

unsafe extern "C" fn ioctl<T: FileOps>(file: *mut bindings::file, cmd: c_uint, arg: c_ulong) -> c_long {
    // SAFETY: the kernel calls `unlocked_ioctl` only on an open file of this table.
    let this = unsafe { object::<T>(file) };
    to_c(T::ioctl(this, cmd, arg as usize))
}

unsafe extern "C" fn mmap<T: FileOps>(file: *mut bindings::file, vma: *mut bindings::vm_area_struct) -> c_int {
    // SAFETY: the kernel calls `mmap` only on an open file of this table.
    let this = unsafe { object::<T>(file) };
    let (mut start, mut end, mut pgoff) = (0, 0, 0);
    // SAFETY: `vma` is the area being set up, valid for the duration of the call.
    unsafe { glue::yakvm_vma_range(vma, &mut start, &mut end, &mut pgoff) };
    let mut vma = Vma { raw: vma, start, end, pgoff };
    match T::mmap(this, &mut vma) {
        Ok(()) => 0,
        Err(e) => e.to_errno(),
    }
}

unsafe extern "C" fn release<T: FileOps>(_inode: *mut bindings::inode, file: *mut bindings::file) -> c_int {
    // SAFETY: the file's last reference is going away: take back the `Arc` it owned
    // (made by `Arc::into_raw` in `open_trampoline` or `new_fd`); nothing uses it after.
    drop(unsafe { Arc::<T>::from_raw(glue::yakvm_file_private(file).cast::<T>()) });
    0
}

unsafe extern "C" fn open_trampoline<T: OpenFileOps>(
    _inode: *mut bindings::inode,
    file: *mut bindings::file,
) -> c_int {
    // SAFETY: `misc_open` set the private data to the `struct miscdevice` being opened,
    // the first field of a live `Registration<T::Context>` (it is deregistered, so no
    // longer opened, before it is freed).
    let reg = unsafe { &*glue::yakvm_file_private(file).cast::<Registration<T::Context>>() };
    match T::open(&reg.context) {
        Ok(obj) => {
            // SAFETY: `file` is being opened and not yet visible to anyone else; it owns
            // the `Arc` from now on, until `release`.
            unsafe { glue::yakvm_file_set_private(file, Arc::into_raw(obj) as *mut c_void) };
            0
        }
        Err(e) => e.to_errno(),
    }
}

/// Makes a new file descriptor (close-on-exec, read-write) for `obj`, named `name` in
/// `/proc/self/fd`. The descriptor owns `obj`'s reference.
pub(crate) fn new_fd<T: FileOps>(name: &'static CStr, obj: Arc<T>) -> Result<isize> {
    extern "C" {
        fn anon_inode_getfd(name: *const c_char, fops: *const c_void,
                            private: *mut c_void, flags: c_int) -> c_int;
    }
    let raw = Arc::into_raw(obj);
    let ops: &'static FileOperations = &Vtable::<T>::ANON;
    // SAFETY: `name` and `ops` are static; `raw` is an owned `Arc` reference handed to the
    // new file, which drops it in `release`.
    let fd = unsafe {
        anon_inode_getfd(name.as_char_ptr(), (&ops.0 as *const bindings::file_operations).cast(), raw as *mut c_void,
                         (bindings::O_RDWR | bindings::O_CLOEXEC) as c_int)
    };
    if fd < 0 {
        // SAFETY: no file was made, so the reference is still ours to drop.
        drop(unsafe { Arc::from_raw(raw) });
        return Err(Error::from_errno(fd));
    }
    Ok(fd as isize)
}

/// A memory area being mapped (`mmap`).
pub(crate) struct Vma {
    raw: *mut bindings::vm_area_struct,
    start: c_ulong,
    end: c_ulong,
    pgoff: c_ulong,
}

impl Vma {
    pub(crate) fn len(&self) -> usize {
        (self.end - self.start) as usize
    }

    /// Offset in the file, in pages.
    pub(crate) fn pgoff(&self) -> usize {
        self.pgoff as usize
    }

    /// Maps `page` at the start of the area (one page). The mapping takes its own page
    /// reference, so it outlives the page's owner safely; it is never copied to a child.
    pub(crate) fn map_page(&mut self, page: &PageRef) -> Result {
        // SAFETY: `raw` is the area being set up by the `mmap` call we are in.
        unsafe { glue::yakvm_vma_set_dontcopy(self.raw) };
        // SAFETY: as above; `page` is a live order-0 kernel page (`PageRef` invariant), on
        // which `vm_insert_page` takes its own reference.
        let ret = unsafe { bindings::vm_insert_page(self.raw, self.start, page.as_ptr()) };
        if ret < 0 {
            return Err(Error::from_errno(ret));
        }
        Ok(())
    }
}

/// Mirror of `struct miscdevice` (include/linux/miscdevice.h), checked by `glue.c`.
#[repr(C)]
struct RawMiscDevice {
    minor: c_int,
    name: *const c_char,
    fops: *const c_void,
    list: [*mut c_void; 2],
    parent: *mut c_void,
    this_device: *mut c_void,
    groups: *const c_void,
    nodename: *const c_char,
    mode: u16,
}
const _: () = assert!(core::mem::size_of::<RawMiscDevice>() == 80);
const _: () = assert!(core::mem::offset_of!(RawMiscDevice, fops) == 16);
const _: () = assert!(core::mem::offset_of!(RawMiscDevice, mode) == 72);

const MISC_DYNAMIC_MINOR: c_int = 255;

extern "C" {
    fn misc_register(misc: *mut RawMiscDevice) -> c_int;
    fn misc_deregister(misc: *mut RawMiscDevice);
}

/// The misc device with the context its opens need. `raw` comes first so that the
/// `struct miscdevice` pointer `misc_open` stores is also a pointer to this.
#[repr(C)]
struct Registration<C> {
    raw: RawMiscDevice,
    context: Arc<C>,
}

/// A registered misc device (`/dev/<name>`), deregistered on drop.
///
/// # Invariants
/// `reg.raw` was registered with `misc_register` and stays at the same address (boxed)
/// until `drop` deregisters it.
pub(crate) struct MiscDevice<C: Send + Sync> {
    reg: KBox<Registration<C>>,
}

// SAFETY: after registration the kernel owns the list links; we only pass the pointer back
// to `misc_deregister`, which may happen on any thread. The context is `Send + Sync`.
unsafe impl<C: Send + Sync> Send for MiscDevice<C> {}
// SAFETY: `&MiscDevice` gives no access to anything.
unsafe impl<C: Send + Sync> Sync for MiscDevice<C> {}

impl<C: Send + Sync> MiscDevice<C> {
    /// Registers `/dev/<name>` whose opens make a `T` from `context`.
    pub(crate) fn register<T: OpenFileOps<Context = C>>(name: &'static CStr, context: Arc<C>) -> Result<Self> {
        let ops: &'static FileOperations = &Vtable::<T>::NODE;
        let mut reg = KBox::new(
            Registration { context, raw: RawMiscDevice {
                minor: MISC_DYNAMIC_MINOR,
                name: name.as_char_ptr(),
                fops: (&ops.0 as *const bindings::file_operations).cast(),
                list: [core::ptr::null_mut(); 2],
                parent: core::ptr::null_mut(),
                this_device: core::ptr::null_mut(),
                groups: core::ptr::null(),
                nodename: core::ptr::null(),
                mode: 0o600,
            } },
            GFP_KERNEL,
        )?;
        // SAFETY: `raw` is a complete `struct miscdevice` (layout checked by glue.c) with
        // static name and fops, at a stable address for as long as it stays registered.
        let ret = unsafe { misc_register(&mut reg.raw) };
        if ret < 0 {
            return Err(Error::from_errno(ret));
        }
        // INVARIANT: registered above.
        Ok(Self { reg })
    }
}

impl<C: Send + Sync> Drop for MiscDevice<C> {
    fn drop(&mut self) {
        // SAFETY: registered (type invariant) and deregistered only here.
        unsafe { misc_deregister(&mut self.reg.raw) };
    }
}
