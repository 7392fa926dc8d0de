//! rpod: FUSE over io_uring (Linux 6.14+, `FUSE_OVER_IO_URING`).
//!
//! How this works. With `Config::io_uring` set and the kernel offering `FUSE_OVER_IO_URING` in
//! INIT (it does only while `/sys/module/fuse/parameters/enable_uring` is `Y`), the session
//! creates one io_uring (128-byte SQEs) per possible CPU *before* it answers INIT, and asks for
//! the flag only when that worked: once the kernel has accepted the flag it holds every new
//! request back until all queues are registered (or one REGISTER fails, which makes it fall
//! back to `/dev/fuse`), so nothing that can fail may come between the INIT reply and the
//! REGISTER commands. After the reply, one thread per queue pins itself to its CPU and submits
//! `FUSE_IO_URING_CMD_REGISTER` for each of its entries: an entry is a header buffer
//! (`struct fuse_uring_req_header`: `in_out` = `fuse_in_header` / `fuse_out_header`, `op_in` =
//! the opcode's fixed in-struct, `ring_ent_in_out` = commit id and payload size) and a payload
//! buffer big enough for `max_write`/`max_pages`. The kernel completes a REGISTER (later a
//! COMMIT_AND_FETCH) when it has put a request into the entry; a request is queued on the queue
//! of the CPU its caller runs on, so the thread pinned there serves it without a cross-CPU
//! wakeup. The thread rebuilds the classic request bytes (in header, `op_in`, payload: the
//! header's `len` counts all three, so the size of `op_in` needs no per-opcode table), runs
//! fuser's usual parsing and dispatch with a reply sender that writes the reply into the
//! entry's buffers (`ReplySender::Uring`), waits for that reply (filesystems may reply from
//! another thread) and then submits `FUSE_IO_URING_CMD_COMMIT_AND_FETCH` with the commit id,
//! which hands the reply to the kernel and the entry back for the next request.
//!
//! FORGET, BATCH_FORGET and INTERRUPT still come through `/dev/fuse`, served by the classic
//! threads, and notifications and backing-id ioctls stay there. On unmount or abort the
//! kernel completes every entry with `ENOTCONN`/`ECONNABORTED` and the queue threads end.

use std::alloc::Layout;
use std::io;
use std::io::IoSlice;
use std::os::fd::AsFd;
use std::os::fd::AsRawFd;
use std::os::fd::RawFd;
use std::ptr::NonNull;
use std::sync::Arc;

use io_uring::IoUring;
use io_uring::cqueue;
use io_uring::opcode;
use io_uring::squeue;
use io_uring::types;
use log::debug;
use log::error;
use log::info;
use log::warn;
use parking_lot::Condvar;
use parking_lot::Mutex;

use crate::Filesystem;
use crate::KernelConfig;
use crate::channel::Channel;
use crate::channel::ChannelSender;
use crate::ll;
use crate::ll::flags::init_flags::InitFlags;
use crate::request::RequestWithSender;
use crate::session::SessionEventLoop;

/// Entries (request slots) per queue. A queue thread serves one request at a time; more
/// entries let the kernel hand it several at once under load.
const QUEUE_DEPTH: usize = 4;
const CMD_REGISTER: u32 = 1;
const CMD_COMMIT_AND_FETCH: u32 = 2;
const IN_HEADER: usize = size_of::<ll::fuse_abi::fuse_in_header>();
const OUT_HEADER: usize = size_of::<ll::fuse_abi::fuse_out_header>();
const OP_IN: usize = 128;
const FUSE_MIN_READ_BUFFER: usize = 8192;
/// The kernel's request size when `FUSE_MAX_PAGES` is not negotiated.
const DEFAULT_MAX_PAGES: usize = 32;
const ENABLE_URING: &str = "/sys/module/fuse/parameters/enable_uring";

/// `struct fuse_uring_ent_in_out` (include/uapi/linux/fuse.h, 7.42).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct EntInOut {
    flags: u64,
    commit_id: u64,
    payload_sz: u32,
    padding: u32,
    reserved: u64,
}

/// `struct fuse_uring_req_header` (7.42): 128 + 128 + 32 bytes.
#[repr(C)]
struct ReqHeader {
    in_out: [u8; 128],
    op_in: [u8; OP_IN],
    ent: EntInOut,
}

const _: () = assert!(size_of::<ReqHeader>() == 288);
const _: () = assert!(size_of::<EntInOut>() == 32);

/// A zeroed, page-aligned heap buffer the kernel reads and writes through a raw address.
/// It is only ever accessed through its raw pointer, never through a Rust reference that
/// lives across a kernel access.
struct RawBuf {
    ptr: NonNull<u8>,
    layout: Layout,
}

// SAFETY: RawBuf owns its allocation; all access goes through the Slot mutex or happens on
// the one queue thread that owns the entry while the kernel does not.
unsafe impl Send for RawBuf {}
// SAFETY: as above; shared access is serialised by the Slot mutex.
unsafe impl Sync for RawBuf {}

impl RawBuf {
    fn new(len: usize) -> io::Result<RawBuf> {
        let layout = Layout::from_size_align(len.max(1), page_size::get())
            .map_err(|e| io::Error::other(e.to_string()))?;
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { std::alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(p).ok_or_else(|| io::Error::from(io::ErrorKind::OutOfMemory))?;
        Ok(RawBuf { ptr, layout })
    }
    fn len(&self) -> usize {
        self.layout.size()
    }
    fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }
}

impl Drop for RawBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) };
    }
}

/// One ring entry: its buffers and the handshake between the queue thread and whoever sends
/// the reply (the filesystem may reply from another thread).
pub(crate) struct Slot {
    header: RawBuf,
    payload: RawBuf,
    /// `iovec[2]` given to REGISTER; the kernel reads it during the submit.
    iov: Box<[libc::iovec; 2]>,
    replied: Mutex<bool>,
    cv: Condvar,
}

// SAFETY: the iovec holds addresses of this slot's own buffers; see RawBuf.
unsafe impl Send for Slot {}
// SAFETY: as above.
unsafe impl Sync for Slot {}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("payload", &self.payload.len())
            .finish()
    }
}

impl Slot {
    fn new(payload: usize) -> io::Result<Slot> {
        let header = RawBuf::new(size_of::<ReqHeader>())?;
        let payload = RawBuf::new(payload)?;
        let iov = Box::new([
            libc::iovec {
                iov_base: header.as_ptr().cast(),
                iov_len: size_of::<ReqHeader>(),
            },
            libc::iovec {
                iov_base: payload.as_ptr().cast(),
                iov_len: payload.len(),
            },
        ]);
        Ok(Slot {
            header,
            payload,
            iov,
            replied: Mutex::new(false),
            cv: Condvar::new(),
        })
    }

    fn hdr(&self) -> *mut ReqHeader {
        self.header.as_ptr().cast()
    }

    /// Writes a reply (`iov[0]` is the `fuse_out_header`) into the entry.
    pub(crate) fn send(&self, iov: &[IoSlice<'_>]) -> io::Result<()> {
        let mut replied = self.replied.lock();
        if *replied {
            return Err(io::Error::other("second reply to one io_uring request"));
        }
        let Some((head, rest)) = iov.split_first() else {
            return Err(io::Error::other("empty reply"));
        };
        if head.len() != OUT_HEADER {
            return Err(io::Error::other("reply without a fuse_out_header"));
        }
        let total: usize = rest.iter().map(|s| s.len()).sum();
        let hdr = self.hdr();
        // SAFETY: the entry is in user space (the kernel completed it and the queue thread
        // waits for this reply before committing); the header buffer holds a ReqHeader and
        // the payload buffer `payload.len()` bytes; the mutex serialises writers.
        unsafe {
            let out = (*hdr).in_out.as_mut_ptr();
            std::ptr::copy_nonoverlapping(head.as_ptr(), out, OUT_HEADER);
            if total > self.payload.len() {
                error!(
                    "io_uring reply of {total} bytes exceeds the entry's {}",
                    self.payload.len()
                );
                let eio = -libc::EIO;
                std::ptr::copy_nonoverlapping(eio.to_ne_bytes().as_ptr(), out.add(4), 4);
                (*hdr).ent.payload_sz = 0;
            } else {
                let mut at = self.payload.as_ptr();
                for s in rest {
                    std::ptr::copy_nonoverlapping(s.as_ptr(), at, s.len());
                    at = at.add(s.len());
                }
                (*hdr).ent.payload_sz = total as u32;
            }
        }
        *replied = true;
        self.cv.notify_one();
        Ok(())
    }

    /// Replies with an error when the request could not be parsed.
    fn send_error(&self, unique: u64, errno: i32) {
        let h = ll::fuse_abi::fuse_out_header {
            len: OUT_HEADER as u32,
            error: -errno,
            unique,
        };
        let bytes = zerocopy::IntoBytes::as_bytes(&h);
        if let Err(e) = self.send(&[IoSlice::new(bytes)]) {
            error!("io_uring error reply: {e}");
        }
    }

    fn wait_reply(&self) {
        let mut replied = self.replied.lock();
        while !*replied {
            self.cv.wait(&mut replied);
        }
        *replied = false;
    }
}

/// The sender half stored in a `ReplySender::Uring`.
#[derive(Debug, Clone)]
pub(crate) struct UringSender {
    pub(crate) slot: Arc<Slot>,
    pub(crate) ch: ChannelSender,
}

/// One queue (one per possible CPU) as prepared before the INIT reply.
pub(crate) struct Queue {
    qid: u16,
    ring: IoUring<squeue::Entry128, cqueue::Entry>,
    slots: Vec<Arc<Slot>>,
}

/// Rings and buffers made before the INIT reply, started by `Session::run`.
pub(crate) struct Prepared {
    pub(crate) queues: Vec<Queue>,
    payload: usize,
}

impl Queue {
    pub(crate) fn qid(&self) -> u16 {
        self.qid
    }
}

impl Prepared {
    pub(crate) fn payload(&self) -> usize {
        self.payload
    }
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("queues", &self.queues.len())
            .field("payload", &self.payload)
            .finish()
    }
}

/// Parses a CPU list like `0-3,5`.
fn cpu_list(s: &str) -> Vec<usize> {
    let mut v = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        let mut it = part.splitn(2, '-');
        let a = it.next().and_then(|x| x.trim().parse::<usize>().ok());
        let b = it.next().and_then(|x| x.trim().parse::<usize>().ok());
        match (a, b) {
            (Some(a), Some(b)) if a <= b && b < 65536 => v.extend(a..=b),
            (Some(a), None) => v.push(a),
            _ => {}
        }
    }
    v
}

fn cpus(file: &str) -> Vec<usize> {
    std::fs::read_to_string(format!("/sys/devices/system/cpu/{file}"))
        .map(|s| cpu_list(&s))
        .unwrap_or_default()
}

/// Decides whether to use io_uring for this INIT and, if so, makes the rings and buffers and
/// adds `FUSE_OVER_IO_URING` to the reply. `Err` carries the reason it is not used.
pub(crate) fn prepare(config: &mut KernelConfig) -> Result<Prepared, String> {
    if !config.capabilities.contains(InitFlags::FUSE_OVER_IO_URING) {
        return Err(match std::fs::read_to_string(ENABLE_URING) {
            Ok(v) if v.trim() != "Y" => format!(
                "the kernel does not offer it ({ENABLE_URING} is {})",
                v.trim()
            ),
            Ok(_) => "the kernel does not offer it".to_owned(),
            Err(_) => "the kernel does not offer it (needs Linux 6.14+ with CONFIG_FUSE_IO_URING)"
                .to_owned(),
        });
    }
    // The kernel waits for a queue per possible CPU before it uses any: too few queues would
    // leave every request waiting, so without the CPU list io_uring is not used.
    let nr = cpus("possible").len();
    if nr == 0 {
        return Err("cannot read /sys/devices/system/cpu/possible".to_owned());
    }
    if nr > usize::from(u16::MAX) {
        return Err(format!("{nr} possible CPUs"));
    }
    let page = page_size::get();
    let pages = if config.requested.contains(InitFlags::FUSE_MAX_PAGES) {
        usize::from(config.max_pages()).max(1)
    } else {
        DEFAULT_MAX_PAGES
    };
    let payload = FUSE_MIN_READ_BUFFER
        .max(config.max_write as usize)
        .max(pages * page)
        .div_ceil(page)
        * page;
    let mut queues = Vec::with_capacity(nr);
    for qid in 0..nr {
        let ring = IoUring::<squeue::Entry128, cqueue::Entry>::builder()
            .setup_cqsize((QUEUE_DEPTH * 2) as u32)
            .build(QUEUE_DEPTH as u32)
            .map_err(|e| format!("io_uring_setup: {e}"))?;
        let mut slots = Vec::with_capacity(QUEUE_DEPTH);
        for _ in 0..QUEUE_DEPTH {
            slots.push(Arc::new(
                Slot::new(payload).map_err(|e| format!("ring buffers: {e}"))?,
            ));
        }
        queues.push(Queue {
            qid: qid as u16,
            ring,
            slots,
        });
    }
    config
        .add_capabilities(InitFlags::FUSE_OVER_IO_URING)
        .map_err(|_| "the kernel does not offer it".to_owned())?;
    Ok(Prepared { queues, payload })
}

/// An SQE for a FUSE uring command on entry `idx`.
fn cmd_sqe(
    fd: RawFd,
    op: u32,
    qid: u16,
    commit_id: u64,
    idx: usize,
    iov: Option<&[libc::iovec; 2]>,
) -> squeue::Entry128 {
    // struct fuse_uring_cmd_req { u64 flags; u64 commit_id; u16 qid; u8 padding[6]; }
    let mut cmd = [0u8; 80];
    cmd[8..16].copy_from_slice(&commit_id.to_ne_bytes());
    cmd[16..18].copy_from_slice(&qid.to_ne_bytes());
    let mut b = opcode::UringCmd80::new(types::Fd(fd), op).cmd(cmd);
    if let Some(iov) = iov {
        b = b.addr(Some(iov.as_ptr() as u64));
    }
    let e = b.build().user_data(idx as u64);
    if iov.is_none() {
        return e;
    }
    // REGISTER also needs `sqe->len = 2` (the iovec count), which the builder has no setter
    // for: `len` is the u32 at byte 24 of `struct io_uring_sqe`.
    // SAFETY: Entry128 is repr(C), 128 bytes of plain integers (an io_uring_sqe and its
    // 64-byte extension), so it can be viewed as bytes and back.
    let mut raw: [u8; 128] = unsafe { std::mem::transmute(e) };
    raw[24..28].copy_from_slice(&2u32.to_ne_bytes());
    // SAFETY: as above; every byte pattern is a valid Entry128.
    unsafe { std::mem::transmute(raw) }
}

/// After a failure between the INIT reply and a queue's REGISTER: sends a REGISTER the kernel
/// must refuse, which makes it drop io_uring for this connection and serve `/dev/fuse`.
pub(crate) fn refuse(fd: RawFd) {
    let Ok(mut ring) = IoUring::<squeue::Entry128, cqueue::Entry>::builder().build(1) else {
        error!("io_uring: cannot tell the kernel to fall back to /dev/fuse");
        return;
    };
    let bad = [
        libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        },
        libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        },
    ];
    let e = cmd_sqe(fd, CMD_REGISTER, 0, 0, 0, Some(&bad));
    // SAFETY: the SQE points to `bad`, which lives until the submit below returns (the
    // kernel reads the iovec during the submit and rejects the zero-length header).
    let _ = unsafe { ring.submission().push(&e) };
    let _ = ring.submit_and_wait(1);
}

fn pin(cpu: usize) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain data; zeroed is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: CPU_SET on a local set; `cpu` is checked against the set size.
    if cpu >= 8 * size_of::<libc::cpu_set_t>() {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: index checked above.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: valid pointer and size of the set; 0 = this thread.
    if unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn ended(res: i32) -> bool {
    res == -libc::ENOTCONN || res == -libc::ECONNABORTED || res == -libc::ENODEV
}

/// Serves one queue until the connection ends.
pub(crate) fn serve<FS: Filesystem>(
    mut q: Queue,
    se: SessionEventLoop<FS>,
    ch: Channel,
    payload: usize,
) -> io::Result<()> {
    let qid = q.qid;
    let cpu = usize::from(qid);
    if cpus("online").contains(&cpu) {
        if let Err(e) = pin(cpu) {
            warn!("io_uring queue {qid}: cannot pin to CPU {cpu}: {e}");
        }
    }
    let fd = ch.as_fd().as_raw_fd();
    let depth = q.slots.len();
    for (i, s) in q.slots.iter().enumerate() {
        let e = cmd_sqe(fd, CMD_REGISTER, qid, 0, i, Some(&s.iov));
        // SAFETY: the SQE points to the slot's iovec and buffers, which the Arc keeps alive
        // for as long as this queue (and any reply sender) exists, beyond the ring's life.
        if unsafe { q.ring.submission().push(&e) }.is_err() {
            return Err(io::Error::other("io_uring submission queue full"));
        }
    }
    // A REGISTER the kernel refuses completes at once; a good one stays pending.
    submit(&q.ring, 0)?;
    let mut live = depth;
    let mut registered = true;
    // Requests that already arrived (a successful completion) are served in the loop below.
    let mut done: Vec<(usize, i32)> = Vec::with_capacity(depth * 2);
    {
        let mut cq = q.ring.completion();
        cq.sync();
        for c in &mut cq {
            if c.result() >= 0 {
                done.push((c.user_data() as usize, c.result()));
            } else {
                registered = false;
                live -= 1;
                let err = io::Error::from_raw_os_error(-c.result());
                if ended(c.result()) {
                    debug!("io_uring queue {qid}: connection ended during REGISTER");
                } else {
                    info!(
                        "FUSE over io_uring not used: REGISTER on queue {qid} failed: {err}; serving /dev/fuse"
                    );
                }
            }
        }
    }
    // After a refused REGISTER the kernel serves /dev/fuse; entries that did register are
    // served below all the same, and end with the connection.
    if registered {
        info!(
            "FUSE over io_uring: queue {qid} registered ({depth} entries, {payload} bytes each{})",
            if cpus("online").contains(&cpu) {
                format!(", CPU {cpu}")
            } else {
                String::new()
            }
        );
    }

    // Requests are rebuilt here: in header, op header, payload (8-byte aligned for parsing).
    let mut req_buf = vec![0u64; (IN_HEADER + OP_IN + payload).div_ceil(8)];
    let mut served_any = false;
    let mut fails = vec![0u32; depth];
    let mut first = true;
    while live > 0 {
        if !std::mem::take(&mut first) {
            submit(&q.ring, 1)?;
            done.clear();
        }
        {
            let mut cq = q.ring.completion();
            cq.sync();
            for c in &mut cq {
                done.push((c.user_data() as usize, c.result()));
            }
        }
        for &(idx, res) in &done {
            let Some(slot) = q.slots.get(idx).cloned() else {
                error!("io_uring queue {qid}: completion for unknown entry {idx}");
                continue;
            };
            if res == -libc::EAGAIN || res == -libc::EINTR {
                // Not taken by the kernel: register the buffers again.
                push(
                    &mut q.ring,
                    cmd_sqe(fd, CMD_REGISTER, qid, 0, idx, Some(&slot.iov)),
                )?;
                continue;
            }
            if res < 0 {
                if ended(res) {
                    live -= 1;
                    continue;
                }
                // The kernel did not take the entry back; offer the buffers as a new one.
                warn!(
                    "io_uring queue {qid}: entry {idx}: {}",
                    io::Error::from_raw_os_error(-res)
                );
                fails[idx] += 1;
                if fails[idx] > 3 {
                    live -= 1;
                    if live == 0 && served_any {
                        // Requests queued for this CPU would wait forever: end the process,
                        // which closes /dev/fuse and aborts the connection (callers get
                        // ENOTCONN instead of hanging).
                        error!("io_uring queue {qid}: no usable entries left; ending the session");
                        std::process::exit(1);
                    }
                    continue;
                }
                push(
                    &mut q.ring,
                    cmd_sqe(fd, CMD_REGISTER, qid, 0, idx, Some(&slot.iov)),
                )?;
                continue;
            }
            fails[idx] = 0;
            served_any = true;
            let commit_id = handle(&se, &ch, &slot, &mut req_buf);
            push(
                &mut q.ring,
                cmd_sqe(fd, CMD_COMMIT_AND_FETCH, qid, commit_id, idx, None),
            )?;
        }
    }
    debug!("io_uring queue {qid}: connection ended (served requests: {served_any})");
    Ok(())
}

fn push(
    ring: &mut IoUring<squeue::Entry128, cqueue::Entry>,
    e: squeue::Entry128,
) -> io::Result<()> {
    // SAFETY: REGISTER SQEs point to a slot's iovec, kept alive by the queue's Arc; commits
    // carry no pointers.
    if unsafe { ring.submission().push(&e) }.is_ok() {
        return Ok(());
    }
    // Cannot happen: one SQE per entry at most is outstanding.
    ring.submit()?;
    // SAFETY: as above.
    unsafe { ring.submission().push(&e) }
        .map_err(|_| io::Error::other("io_uring submission queue full"))
}

fn submit(ring: &IoUring<squeue::Entry128, cqueue::Entry>, want: usize) -> io::Result<()> {
    loop {
        match ring.submit_and_wait(want) {
            Ok(_) => return Ok(()),
            Err(e)
                if e.raw_os_error() == Some(libc::EINTR)
                    || e.raw_os_error() == Some(libc::EAGAIN) =>
            {
                continue;
            }
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                // Completion queue full: the caller drains it next.
                return Ok(());
            }
            Err(e) => return Err(e),
        }
    }
}

/// Serves the request in `slot`; returns its commit id once the reply is in the slot.
fn handle<FS: Filesystem>(
    se: &SessionEventLoop<FS>,
    ch: &Channel,
    slot: &Arc<Slot>,
    buf: &mut [u64],
) -> u64 {
    let hdr = slot.hdr();
    // SAFETY: the kernel completed this entry: until our commit the buffers are ours, and no
    // reply sender for it exists yet. The casts view u64 storage as bytes.
    let (ent, len, unique) = unsafe {
        let ent = (*hdr).ent;
        let in_out = (*hdr).in_out.as_ptr();
        let len =
            u32::from_ne_bytes([*in_out, *in_out.add(1), *in_out.add(2), *in_out.add(3)]) as usize;
        let mut u = [0u8; 8];
        std::ptr::copy_nonoverlapping(in_out.add(8), u.as_mut_ptr(), 8);
        (ent, len, u64::from_ne_bytes(u))
    };
    let payload_sz = ent.payload_sz as usize;
    let op_len = len.checked_sub(IN_HEADER + payload_sz);
    let bytes_cap = buf.len() * 8;
    match op_len {
        Some(op_len) if op_len <= OP_IN && payload_sz <= slot.payload.len() && len <= bytes_cap => {
            let dst = buf.as_mut_ptr().cast::<u8>();
            // SAFETY: sizes checked above; source buffers are the entry's, owned by us now.
            unsafe {
                std::ptr::copy_nonoverlapping((*hdr).in_out.as_ptr(), dst, IN_HEADER);
                std::ptr::copy_nonoverlapping((*hdr).op_in.as_ptr(), dst.add(IN_HEADER), op_len);
                std::ptr::copy_nonoverlapping(
                    slot.payload.as_ptr(),
                    dst.add(IN_HEADER + op_len),
                    payload_sz,
                );
            }
            // SAFETY: `len` bytes of the u64 buffer were just written.
            let data = unsafe { std::slice::from_raw_parts(dst.cast_const(), len) };
            let sender = UringSender {
                slot: slot.clone(),
                ch: ch.sender(),
            };
            match RequestWithSender::new_uring(sender, data) {
                Some(req) => {
                    if let Ok(ll::Operation::Destroy(_)) = req.request.operation() {
                        req.reply::<crate::ReplyEmpty>().ok();
                    } else {
                        req.dispatch(se);
                    }
                }
                None => slot.send_error(unique, libc::EIO),
            }
        }
        _ => {
            error!("io_uring: malformed request (len {len}, payload {payload_sz})");
            slot.send_error(unique, libc::EIO);
        }
    }
    slot.wait_reply();
    ent.commit_id
}
