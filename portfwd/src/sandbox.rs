//! `--enable-sandbox` and `--enable-seccomp`: what portfwd gives up once it is set up.
//!
//! How this works: after the TAP device, the API socket and the start-time forwards exist,
//! portfwd needs no file system and no privilege. The sandbox moves it into a private mount
//! namespace whose root is an empty tmpfs (pivot_root, old root detached), sets
//! no_new_privs and drops every capability (keeping CAP_NET_BIND_SERVICE when it has it, so
//! API forwards of low ports still work). The seccomp filter is a plain classic-BPF deny
//! list (EPERM) of system calls the loop never makes: mounts, namespaces, ptrace, exec,
//! module and kexec loading, bpf, keyrings and the like; everything else is allowed, so a
//! forgotten system call cannot kill the network of a running container.

use std::ffi::CString;
use std::io;

fn cvt(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn cstr(s: &str) -> CString {
    CString::new(s).unwrap_or_default()
}

/// Private mount namespace with an empty root, no capabilities.
pub fn enter_sandbox() -> io::Result<()> {
    // SAFETY: unshare with a constant flag.
    match cvt(unsafe { libc::unshare(libc::CLONE_NEWNS) }) {
        Ok(()) => pivot_to_empty_root()?,
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            tracing::warn!("sandbox: no private mount namespace ({e}); dropping capabilities only");
        }
        Err(e) => return Err(e),
    }
    drop_caps()
}

fn pivot_to_empty_root() -> io::Result<()> {
    let root = cstr("/");
    let tmp = cstr("/tmp");
    let tmpfs = cstr("tmpfs");
    let old = cstr("old");
    let slash_old = cstr("/old");
    let dot = cstr(".");
    // SAFETY: all pointers are valid C strings for the duration of each call.
    unsafe {
        cvt(libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ))?;
        cvt(libc::mount(
            tmpfs.as_ptr(),
            tmp.as_ptr(),
            tmpfs.as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            std::ptr::null(),
        ))?;
        cvt(libc::chdir(tmp.as_ptr()))?;
        cvt(libc::mkdir(old.as_ptr(), 0o700))?;
        cvt(libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), old.as_ptr()) as libc::c_int)?;
        cvt(libc::chdir(root.as_ptr()))?;
        cvt(libc::umount2(slash_old.as_ptr(), libc::MNT_DETACH))?;
        cvt(libc::rmdir(slash_old.as_ptr()))?;
    }
    Ok(())
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAP_NET_BIND_SERVICE: u32 = 10;

fn drop_caps() -> io::Result<()> {
    let mut hdr = CapHeader { version: 0x2008_0522, pid: 0 };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget with a valid header and room for two data structs (version 3).
    cvt(unsafe { libc::syscall(libc::SYS_capget, &mut hdr, data.as_mut_ptr()) as libc::c_int })?;
    let keep_bind = data[0].permitted & (1 << CAP_NET_BIND_SERVICE) != 0;
    for cap in 0..64 {
        if keep_bind && cap == CAP_NET_BIND_SERVICE {
            continue;
        }
        // SAFETY: prctl with integer arguments; failures (no CAP_SETPCAP, unknown cap) are fine.
        unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
    }
    let keep = if keep_bind { 1 << CAP_NET_BIND_SERVICE } else { 0 };
    let new = [CapData { effective: keep, permitted: keep, inheritable: 0 }, CapData::default()];
    let mut hdr = CapHeader { version: 0x2008_0522, pid: 0 };
    // SAFETY: capset with a valid header and two data structs.
    cvt(unsafe { libc::syscall(libc::SYS_capset, &mut hdr, new.as_ptr()) as libc::c_int })?;
    // SAFETY: prctl with constant arguments.
    cvt(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) })
}

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;

/// The denied system calls.
fn denied() -> Vec<libc::c_long> {
    vec![
        libc::SYS_mount,
        libc::SYS_umount2,
        libc::SYS_pivot_root,
        libc::SYS_chroot,
        libc::SYS_setns,
        libc::SYS_unshare,
        libc::SYS_ptrace,
        libc::SYS_process_vm_readv,
        libc::SYS_process_vm_writev,
        libc::SYS_kexec_load,
        libc::SYS_kexec_file_load,
        libc::SYS_reboot,
        libc::SYS_init_module,
        libc::SYS_finit_module,
        libc::SYS_delete_module,
        libc::SYS_bpf,
        libc::SYS_perf_event_open,
        libc::SYS_keyctl,
        libc::SYS_add_key,
        libc::SYS_request_key,
        libc::SYS_swapon,
        libc::SYS_swapoff,
        libc::SYS_acct,
        libc::SYS_settimeofday,
        libc::SYS_clock_settime,
        libc::SYS_open_by_handle_at,
        libc::SYS_userfaultfd,
        libc::SYS_execve,
        libc::SYS_execveat,
        libc::SYS_fsopen,
        libc::SYS_fsmount,
        libc::SYS_move_mount,
        libc::SYS_open_tree,
        libc::SYS_quotactl,
        libc::SYS_personality,
    ]
}

/// Installs the deny-list filter (sets no_new_privs first, as unprivileged seccomp needs).
pub fn enable_seccomp() -> io::Result<()> {
    const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    const JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
    const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    let st = |code: u16, jt: u8, jf: u8, k: u32| libc::sock_filter { code, jt, jf, k };
    let eperm = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
    let mut f = vec![
        st(LD_W_ABS, 0, 0, 4), // arch
        st(JEQ_K, 1, 0, AUDIT_ARCH),
        st(RET_K, 0, 0, libc::SECCOMP_RET_KILL_PROCESS),
        st(LD_W_ABS, 0, 0, 0),        // nr
        st(JGE_K, 0, 1, 0x4000_0000), // x32 ABI
        st(RET_K, 0, 0, eperm),
    ];
    for nr in denied() {
        f.push(st(JEQ_K, 0, 1, nr as u32));
        f.push(st(RET_K, 0, 0, eperm));
    }
    f.push(st(RET_K, 0, 0, libc::SECCOMP_RET_ALLOW));
    let prog = libc::sock_fprog { len: f.len() as u16, filter: f.as_mut_ptr() };
    // SAFETY: prctl with constant arguments.
    cvt(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) })?;
    // SAFETY: prog points to a valid filter that outlives the call (the kernel copies it).
    cvt(unsafe { libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &prog as *const libc::sock_fprog) })
}
