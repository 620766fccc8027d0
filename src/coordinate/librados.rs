//! The few librados calls coordination needs, with librados loaded when a run asks for
//! coordination and not before.
//!
//! Why librados, and why loaded at run time: a lease in RADOS (`cls_lock`) belongs to one client
//! instance and a cookie, and only that instance may renew it. Every `rados` command is a new
//! client instance, so a lease taken by one `rados lock get` could never be renewed by the next:
//! renewal needs one connection that lives as long as the run, which only the library gives.
//! Loading `librados.so.2` with `dlopen` (the `libloading` crate) instead of linking it keeps the
//! build free of Ceph's development headers and lets the binary start on hosts without librados
//! when coordination is off. The `ceph` crate would link it at build time and brings old
//! dependencies (nix 0.18, nom 5) for the dozen C functions used here, whose signatures have been
//! stable in `librados.h` since Ceph Luminous.
//!
//! Every call here is synchronous and bounded by the client's `rados_osd_op_timeout` and
//! `rados_mon_op_timeout`, set from `ceph timeout` when connecting. Errors are negative errno
//! values, turned into [`RadosError`] naming the call and the object.

// The one module with foreign calls: each `unsafe` block below calls a librados function with
// pointers that live for the call (CStrings, buffers, out-parameters on the stack).
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_void, CString};
use std::ptr;
use std::sync::OnceLock;
use std::time::Duration;

type Handle = *mut c_void;

/// `LIBRADOS_LOCK_FLAG_MUST_RENEW`: renew only a lease still held; fails with ENOENT otherwise.
const LOCK_FLAG_MUST_RENEW: u8 = 1 << 1;
/// `LIBRADOS_CREATE_EXCLUSIVE`.
const CREATE_EXCLUSIVE: c_int = 1;
/// The library's file name, as the `librados2` package installs it.
const LIBRARY: &str = "librados.so.2";
/// Values read back from an object's omap per call: far more than the tool ever writes.
pub const MAX_OMAP_VALUES: u64 = 100_000;

/// A failed librados call: the call, the object it concerned, and the errno.
#[derive(Debug, thiserror::Error)]
#[error("{call} {object}: {}", describe(*errno))]
pub struct RadosError {
    pub call: &'static str,
    pub object: String,
    pub errno: i32,
}

fn describe(errno: i32) -> String {
    std::io::Error::from_raw_os_error(errno).to_string()
}

struct Api {
    create2: unsafe extern "C" fn(*mut Handle, *const c_char, *const c_char, u64) -> c_int,
    conf_read_file: unsafe extern "C" fn(Handle, *const c_char) -> c_int,
    conf_set: unsafe extern "C" fn(Handle, *const c_char, *const c_char) -> c_int,
    connect: unsafe extern "C" fn(Handle) -> c_int,
    shutdown: unsafe extern "C" fn(Handle),
    ioctx_create: unsafe extern "C" fn(Handle, *const c_char, *mut Handle) -> c_int,
    ioctx_destroy: unsafe extern "C" fn(Handle),
    #[allow(clippy::type_complexity)]
    lock_exclusive: unsafe extern "C" fn(
        Handle,
        *const c_char,
        *const c_char,
        *const c_char,
        *const c_char,
        *mut libc::timeval,
        u8,
    ) -> c_int,
    #[allow(clippy::type_complexity)]
    lock_shared: unsafe extern "C" fn(
        Handle,
        *const c_char,
        *const c_char,
        *const c_char,
        *const c_char,
        *const c_char,
        *mut libc::timeval,
        u8,
    ) -> c_int,
    unlock: unsafe extern "C" fn(Handle, *const c_char, *const c_char, *const c_char) -> c_int,
    #[allow(clippy::type_complexity)]
    list_lockers: unsafe extern "C" fn(
        Handle,
        *const c_char,
        *const c_char,
        *mut c_int,
        *mut c_char,
        *mut usize,
        *mut c_char,
        *mut usize,
        *mut c_char,
        *mut usize,
        *mut c_char,
        *mut usize,
    ) -> isize,
    create_write_op: unsafe extern "C" fn() -> Handle,
    release_write_op: unsafe extern "C" fn(Handle),
    write_op_create: unsafe extern "C" fn(Handle, c_int, *const c_char),
    #[allow(clippy::type_complexity)]
    write_op_omap_set2: unsafe extern "C" fn(
        Handle,
        *const *const c_char,
        *const *const c_char,
        *const usize,
        *const usize,
        usize,
    ),
    write_op_operate:
        unsafe extern "C" fn(Handle, Handle, *const c_char, *mut libc::time_t, c_int) -> c_int,
    create_read_op: unsafe extern "C" fn() -> Handle,
    release_read_op: unsafe extern "C" fn(Handle),
    #[allow(clippy::type_complexity)]
    read_op_omap_get_vals2: unsafe extern "C" fn(
        Handle,
        *const c_char,
        *const c_char,
        u64,
        *mut Handle,
        *mut u8,
        *mut c_int,
    ),
    read_op_operate: unsafe extern "C" fn(Handle, Handle, *const c_char, c_int) -> c_int,
    omap_get_next2: unsafe extern "C" fn(
        Handle,
        *mut *mut c_char,
        *mut *mut c_char,
        *mut usize,
        *mut usize,
    ) -> c_int,
    omap_get_end: unsafe extern "C" fn(Handle),
}

/// The library, loaded once and never unloaded: librados keeps threads of its own.
fn api() -> Result<&'static Api, String> {
    static API: OnceLock<Result<Api, String>> = OnceLock::new();
    API.get_or_init(load).as_ref().map_err(Clone::clone)
}

fn load() -> Result<Api, String> {
    // SAFETY: loading librados runs its initialisers, which only set up its own state.
    let library = unsafe { libloading::Library::new(LIBRARY) }.map_err(|err| {
        format!("coordination needs librados ({LIBRARY}, Debian package librados2): {err}")
    })?;
    let library: &'static libloading::Library = Box::leak(Box::new(library));
    macro_rules! symbol {
        ($name:literal) => {
            // SAFETY: the field's type is the function's C signature in librados.h.
            *unsafe { library.get(concat!($name, "\0").as_bytes()) }
                .map_err(|err| format!("{LIBRARY} has no {}: {err}", $name))?
        };
    }
    Ok(Api {
        create2: symbol!("rados_create2"),
        conf_read_file: symbol!("rados_conf_read_file"),
        conf_set: symbol!("rados_conf_set"),
        connect: symbol!("rados_connect"),
        shutdown: symbol!("rados_shutdown"),
        ioctx_create: symbol!("rados_ioctx_create"),
        ioctx_destroy: symbol!("rados_ioctx_destroy"),
        lock_exclusive: symbol!("rados_lock_exclusive"),
        lock_shared: symbol!("rados_lock_shared"),
        unlock: symbol!("rados_unlock"),
        list_lockers: symbol!("rados_list_lockers"),
        create_write_op: symbol!("rados_create_write_op"),
        release_write_op: symbol!("rados_release_write_op"),
        write_op_create: symbol!("rados_write_op_create"),
        write_op_omap_set2: symbol!("rados_write_op_omap_set2"),
        write_op_operate: symbol!("rados_write_op_operate"),
        create_read_op: symbol!("rados_create_read_op"),
        release_read_op: symbol!("rados_release_read_op"),
        read_op_omap_get_vals2: symbol!("rados_read_op_omap_get_vals2"),
        read_op_operate: symbol!("rados_read_op_operate"),
        omap_get_next2: symbol!("rados_omap_get_next2"),
        omap_get_end: symbol!("rados_omap_get_end"),
    })
}

/// A C string of `text`; names with a NUL byte cannot reach here (pool and image names are
/// checked when read), but are refused rather than cut.
fn c(text: &str) -> Result<CString, RadosError> {
    CString::new(text).map_err(|_| RadosError {
        call: "name",
        object: text.escape_debug().to_string(),
        errno: libc::EINVAL,
    })
}

/// librados could not allocate an operation.
fn out_of_memory(call: &'static str, object: &str) -> RadosError {
    RadosError {
        call,
        object: object.to_string(),
        errno: libc::ENOMEM,
    }
}

fn check(call: &'static str, object: &str, code: c_int) -> Result<(), RadosError> {
    if code < 0 {
        return Err(RadosError {
            call,
            object: object.to_string(),
            errno: -code,
        });
    }
    Ok(())
}

/// How to reach a cluster: what `rbd` would be given.
pub struct Login<'a> {
    pub conf: &'a std::path::Path,
    /// The client name without `client.` (`admin` when `None`).
    pub user: Option<&'a str>,
    pub keyring: Option<&'a std::path::Path>,
    /// Seconds any one operation may take (0: Ceph's defaults).
    pub timeout: u32,
}

/// A connected pool: one client instance for the life of the run, so that it can renew the
/// leases it took.
pub struct Pool {
    api: &'static Api,
    cluster: Handle,
    io: Handle,
}

// SAFETY: librados' handles are thread-safe: a cluster handle and an I/O context may be used by
// several threads at once (librados serialises what needs it internally).
unsafe impl Send for Pool {}
unsafe impl Sync for Pool {}

impl Drop for Pool {
    fn drop(&mut self) {
        // SAFETY: both handles were created by connect and are released once, here.
        unsafe {
            (self.api.ioctx_destroy)(self.io);
            (self.api.shutdown)(self.cluster);
        }
    }
}

/// Who holds a lock on an object, as `rados_list_lockers` tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lockers {
    pub tag: String,
    /// Each holder's cookie.
    pub cookies: Vec<String>,
}

impl Pool {
    /// Connects to the cluster of `login` and opens `pool`.
    pub fn connect(login: &Login, pool: &str) -> anyhow::Result<Pool> {
        let api = api().map_err(anyhow::Error::msg)?;
        let name = c(&format!("client.{}", login.user.unwrap_or("admin")))?;
        let cluster_name = c("ceph")?;
        let mut cluster: Handle = ptr::null_mut();
        // SAFETY: out-parameter on the stack; the names live for the call.
        let code = unsafe { (api.create2)(&mut cluster, cluster_name.as_ptr(), name.as_ptr(), 0) };
        check("rados_create2", "", code)?;
        let mut pool_handle = Pool {
            api,
            cluster,
            io: ptr::null_mut(),
        };
        let conf = login.conf.display().to_string();
        // SAFETY: the cluster handle is live and not yet connected; the path lives for the call.
        let code = unsafe { (api.conf_read_file)(cluster, c(&conf)?.as_ptr()) };
        check("rados_conf_read_file", &conf, code)?;
        let timeout = login.timeout.to_string();
        let mut settings = vec![];
        if let Some(keyring) = login.keyring {
            settings.push(("keyring", keyring.display().to_string()));
        }
        if login.timeout > 0 {
            settings.push(("client_mount_timeout", timeout.clone()));
            settings.push(("rados_osd_op_timeout", timeout.clone()));
            settings.push(("rados_mon_op_timeout", timeout));
        }
        for (option, value) in settings {
            // SAFETY: as above.
            let code = unsafe { (api.conf_set)(cluster, c(option)?.as_ptr(), c(&value)?.as_ptr()) };
            check("rados_conf_set", option, code)?;
        }
        // SAFETY: the configured handle.
        check("rados_connect", &conf, unsafe { (api.connect)(cluster) })?;
        let mut io: Handle = ptr::null_mut();
        // SAFETY: a connected handle; out-parameter on the stack.
        let code = unsafe { (api.ioctx_create)(cluster, c(pool)?.as_ptr(), &mut io) };
        check("rados_ioctx_create", pool, code)?;
        pool_handle.io = io;
        Ok(pool_handle)
    }

    /// Takes (or with `renew`, renews) lock `name` on `object` for `duration`: exclusively, or
    /// shared under `tag`.
    pub fn lock(
        &self,
        object: &str,
        name: &str,
        holder: &Holder,
        duration: Duration,
        renew: bool,
    ) -> Result<(), RadosError> {
        let (oid, lock_name) = (c(object)?, c(name)?);
        let (cookie, description) = (c(&holder.cookie)?, c(&holder.description)?);
        let mut time = libc::timeval {
            tv_sec: libc::time_t::try_from(duration.as_secs()).unwrap_or(libc::time_t::MAX),
            tv_usec: libc::suseconds_t::from(duration.subsec_micros()),
        };
        let flags = if renew { LOCK_FLAG_MUST_RENEW } else { 0 };
        let code = match &holder.tag {
            // SAFETY: every pointer lives for the call; `time` is read only.
            None => unsafe {
                (self.api.lock_exclusive)(
                    self.io,
                    oid.as_ptr(),
                    lock_name.as_ptr(),
                    cookie.as_ptr(),
                    description.as_ptr(),
                    &mut time,
                    flags,
                )
            },
            Some(tag) => {
                let tag = c(tag)?;
                // SAFETY: as above.
                unsafe {
                    (self.api.lock_shared)(
                        self.io,
                        oid.as_ptr(),
                        lock_name.as_ptr(),
                        cookie.as_ptr(),
                        tag.as_ptr(),
                        description.as_ptr(),
                        &mut time,
                        flags,
                    )
                }
            }
        };
        check("lock", object, code)
    }

    /// Releases lock `name` on `object` held by this client under `cookie`.
    pub fn unlock(&self, object: &str, name: &str, cookie: &str) -> Result<(), RadosError> {
        let (oid, lock_name, cookie) = (c(object)?, c(name)?, c(cookie)?);
        // SAFETY: every pointer lives for the call.
        let code = unsafe {
            (self.api.unlock)(self.io, oid.as_ptr(), lock_name.as_ptr(), cookie.as_ptr())
        };
        check("unlock", object, code)
    }

    /// Who holds lock `name` on `object` now (expired holders are not listed: the OSD drops them
    /// as it reads the lock).
    pub fn lockers(&self, object: &str, name: &str) -> Result<Lockers, RadosError> {
        let (oid, lock_name) = (c(object)?, c(name)?);
        let mut sizes = [256usize; 4];
        // A short buffer makes librados say how much room the lists need, and the next round
        // has it; a third covers holders that came between the two.
        for _ in 0..3 {
            let mut buffers: Vec<Vec<u8>> = sizes.iter().map(|&size| vec![0u8; size]).collect();
            let mut exclusive: c_int = 0;
            let [tag, clients, cookies, addrs] = &mut buffers[..] else {
                unreachable!("four buffers")
            };
            let [tag_len, clients_len, cookies_len, addrs_len] = &mut sizes;
            // SAFETY: each buffer is as long as its length says; librados writes within it.
            let code = unsafe {
                (self.api.list_lockers)(
                    self.io,
                    oid.as_ptr(),
                    lock_name.as_ptr(),
                    &mut exclusive,
                    tag.as_mut_ptr().cast(),
                    tag_len,
                    clients.as_mut_ptr().cast(),
                    clients_len,
                    cookies.as_mut_ptr().cast(),
                    cookies_len,
                    addrs.as_mut_ptr().cast(),
                    addrs_len,
                )
            };
            match code {
                // A missing object has no lockers.
                n if n == -(libc::ENOENT as isize) => {
                    return Ok(Lockers {
                        tag: String::new(),
                        cookies: Vec::new(),
                    })
                }
                n if n == -(libc::ERANGE as isize) => {
                    for size in &mut sizes {
                        *size = (*size).clamp(256, 1 << 20);
                    }
                    continue;
                }
                n if n < 0 => {
                    return Err(RadosError {
                        call: "list lockers",
                        object: object.to_string(),
                        errno: i32::try_from(-n).unwrap_or(libc::EIO),
                    })
                }
                count => {
                    let count = usize::try_from(count).unwrap_or(0);
                    let tag = split_nul(&buffers[0][..sizes[0].min(buffers[0].len())]);
                    let cookies = split_nul(&buffers[2][..sizes[2].min(buffers[2].len())]);
                    return Ok(Lockers {
                        tag: tag.into_iter().next().unwrap_or_default(),
                        cookies: cookies.into_iter().take(count).collect(),
                    });
                }
            }
        }
        Err(RadosError {
            call: "list lockers",
            object: object.to_string(),
            errno: libc::ERANGE,
        })
    }

    /// Sets `entries` in the omap of `object` (created when missing), or with `create_only`
    /// only when the object does not exist yet (EEXIST otherwise), in one atomic operation.
    pub fn omap_set(
        &self,
        object: &str,
        entries: &[(&str, &[u8])],
        create_only: bool,
    ) -> Result<(), RadosError> {
        let oid = c(object)?;
        let keys: Vec<&[u8]> = entries.iter().map(|(key, _)| key.as_bytes()).collect();
        let key_ptrs: Vec<*const c_char> = keys.iter().map(|k| k.as_ptr().cast()).collect();
        let key_lens: Vec<usize> = keys.iter().map(|k| k.len()).collect();
        let val_ptrs: Vec<*const c_char> = entries.iter().map(|(_, v)| v.as_ptr().cast()).collect();
        let val_lens: Vec<usize> = entries.iter().map(|(_, v)| v.len()).collect();
        // SAFETY: the operation is created, filled with pointers that outlive it, run and
        // released here.
        let code = unsafe {
            let op = (self.api.create_write_op)();
            if op.is_null() {
                return Err(out_of_memory("omap set", object));
            }
            if create_only {
                (self.api.write_op_create)(op, CREATE_EXCLUSIVE, ptr::null());
            }
            (self.api.write_op_omap_set2)(
                op,
                key_ptrs.as_ptr(),
                val_ptrs.as_ptr(),
                key_lens.as_ptr(),
                val_lens.as_ptr(),
                entries.len(),
            );
            let code = (self.api.write_op_operate)(op, self.io, oid.as_ptr(), ptr::null_mut(), 0);
            (self.api.release_write_op)(op);
            code
        };
        check("omap set", object, code)
    }

    /// The omap entries of `object` whose keys start with `prefix` (none when the object does
    /// not exist), at most [`MAX_OMAP_VALUES`].
    pub fn omap_get(
        &self,
        object: &str,
        prefix: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, RadosError> {
        let (oid, filter, start) = (c(object)?, c(prefix)?, c("")?);
        let mut entries = Vec::new();
        let mut inner: c_int = 0;
        let mut more: u8 = 0;
        let mut iter: Handle = ptr::null_mut();
        // SAFETY: the operation and its iterator are created, read and released here; key and
        // value pointers are copied before the iterator ends.
        let code = unsafe {
            let op = (self.api.create_read_op)();
            if op.is_null() {
                return Err(out_of_memory("omap get", object));
            }
            (self.api.read_op_omap_get_vals2)(
                op,
                start.as_ptr(),
                filter.as_ptr(),
                MAX_OMAP_VALUES,
                &mut iter,
                &mut more,
                &mut inner,
            );
            let code = (self.api.read_op_operate)(op, self.io, oid.as_ptr(), 0);
            if code >= 0 && inner >= 0 && !iter.is_null() {
                loop {
                    let (mut key, mut val): (*mut c_char, *mut c_char) =
                        (ptr::null_mut(), ptr::null_mut());
                    let (mut key_len, mut val_len) = (0usize, 0usize);
                    let next = (self.api.omap_get_next2)(
                        iter,
                        &mut key,
                        &mut val,
                        &mut key_len,
                        &mut val_len,
                    );
                    if next < 0 || key.is_null() {
                        break;
                    }
                    let key = std::slice::from_raw_parts(key.cast::<u8>(), key_len);
                    let val = if val.is_null() {
                        Vec::new()
                    } else {
                        std::slice::from_raw_parts(val.cast::<u8>(), val_len).to_vec()
                    };
                    entries.push((String::from_utf8_lossy(key).into_owned(), val));
                }
            }
            if !iter.is_null() {
                (self.api.omap_get_end)(iter);
            }
            (self.api.release_read_op)(op);
            if code < 0 {
                code
            } else {
                inner.min(0)
            }
        };
        match code {
            code if code == -libc::ENOENT => Ok(Vec::new()),
            code => check("omap get", object, code).map(|()| entries),
        }
    }
}

/// Who takes a lock: the cookie (the host's name), what `rados lock info` shows of it, and for a
/// shared lock its tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub cookie: String,
    pub description: String,
    pub tag: Option<String>,
}

fn split_nul(bytes: &[u8]) -> Vec<String> {
    bytes
        .split(|&b| b == 0)
        .filter(|part| !part.is_empty())
        .map(|part| String::from_utf8_lossy(part).into_owned())
        .collect()
}
