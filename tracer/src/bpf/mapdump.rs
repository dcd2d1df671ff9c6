//! Reading a whole map in few syscalls. aya iterates a map with one
//! BPF_MAP_GET_NEXT_KEY and one BPF_MAP_LOOKUP_ELEM per entry: a scrape of
//! every tool was ~3500 syscalls (the block tools' 1024-slot in-flight arrays,
//! per-process tables). BPF_MAP_LOOKUP_BATCH (Linux 5.6+) returns hundreds of
//! entries per call; where the kernel refuses it, the per-entry walk is used.

use std::os::fd::{AsFd as _, AsRawFd as _};

use anyhow::{Result, bail};
use aya::{
    Pod,
    maps::{Map, MapData},
};

const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// Entries fetched per batch call.
const BATCH: usize = 256;

/// `union bpf_attr` for the element commands.
#[repr(C)]
#[derive(Default)]
struct ElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value_or_next_key: u64,
    flags: u64,
}

/// `union bpf_attr` for the batch commands.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<()> {
    // SAFETY: the bpf syscall with an attribute struct of the size we pass; the
    // buffers it points to are live and as large as the map's key/value sizes.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T,
            std::mem::size_of::<T>() as u32,
        )
    };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn read<T: Pod>(bytes: &[u8]) -> T {
    assert!(bytes.len() >= std::mem::size_of::<T>());
    // SAFETY: T is Pod (any bit pattern is valid) and the slice is long enough.
    unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) }
}

/// Every entry of `map` (an array or hash map, per-CPU or not) as (key,
/// values): one value for plain maps, one per possible CPU for per-CPU maps.
pub fn entries<K: Pod, V: Pod>(map: &Map) -> Result<Vec<(K, Vec<V>)>> {
    let (data, per_cpu): (&MapData, bool) = match map {
        Map::Array(m) | Map::HashMap(m) | Map::LruHashMap(m) => (m, false),
        Map::PerCpuArray(m) | Map::PerCpuHashMap(m) | Map::PerCpuLruHashMap(m) => (m, true),
        _ => bail!("not an array or hash map"),
    };
    let fd = data.fd().as_fd().as_raw_fd() as u32;
    let key_size = std::mem::size_of::<K>();
    let cpus = if per_cpu {
        aya::util::nr_cpus().map_err(|(what, e)| anyhow::anyhow!("{what}: {e}"))?
    } else {
        1
    };
    // Per-CPU values are laid out at 8-byte strides.
    let stride = if per_cpu {
        std::mem::size_of::<V>().next_multiple_of(8)
    } else {
        std::mem::size_of::<V>()
    };
    let value_size = stride * cpus;
    let decode = |key: &[u8], value: &[u8]| -> (K, Vec<V>) {
        (
            read(key),
            (0..cpus).map(|c| read(&value[c * stride..])).collect(),
        )
    };
    match batched(fd, key_size, value_size) {
        Ok(raw) => Ok(raw
            .chunks_exact(key_size + value_size)
            .map(|e| decode(&e[..key_size], &e[key_size..]))
            .collect()),
        // Not offered for this map type or kernel: entry by entry.
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EINVAL | libc::EOPNOTSUPP | libc::ENOSPC | 524)
            ) =>
        {
            let mut out = Vec::new();
            let mut key = vec![0u8; key_size];
            let mut next = vec![0u8; key_size];
            let mut value = vec![0u8; value_size];
            let mut first = true;
            loop {
                let mut attr = ElemAttr {
                    map_fd: fd,
                    key: if first { 0 } else { key.as_ptr() as u64 },
                    value_or_next_key: next.as_mut_ptr() as u64,
                    ..Default::default()
                };
                match bpf(BPF_MAP_GET_NEXT_KEY, &mut attr) {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => break,
                    Err(e) => bail!("reading a map: {e}"),
                }
                first = false;
                std::mem::swap(&mut key, &mut next);
                let mut attr = ElemAttr {
                    map_fd: fd,
                    key: key.as_ptr() as u64,
                    value_or_next_key: value.as_mut_ptr() as u64,
                    ..Default::default()
                };
                match bpf(BPF_MAP_LOOKUP_ELEM, &mut attr) {
                    Ok(()) => out.push(decode(&key, &value)),
                    // Deleted between the two calls.
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                    Err(e) => bail!("reading a map: {e}"),
                }
            }
            Ok(out)
        }
        Err(e) => bail!("reading a map: {e}"),
    }
}

/// The raw (key, value) records of the whole map, back to back.
fn batched(fd: u32, key_size: usize, value_size: usize) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut keys = vec![0u8; BATCH * key_size];
    let mut values = vec![0u8; BATCH * value_size];
    // The position token: a bucket index for hash maps, a key for arrays.
    let token = key_size.max(8);
    let mut in_batch = vec![0u8; token];
    let mut out_batch = vec![0u8; token];
    let mut first = true;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { in_batch.as_ptr() as u64 },
            out_batch: out_batch.as_mut_ptr() as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: BATCH as u32,
            map_fd: fd,
            ..Default::default()
        };
        let result = bpf(BPF_MAP_LOOKUP_BATCH, &mut attr);
        let n = attr.count as usize;
        let done = match result {
            Ok(()) => false,
            // The last batch: `count` says how many it filled.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => true,
            Err(e) => return Err(e),
        };
        for i in 0..n {
            out.extend_from_slice(&keys[i * key_size..(i + 1) * key_size]);
            out.extend_from_slice(&values[i * value_size..(i + 1) * value_size]);
        }
        if done {
            return Ok(out);
        }
        first = false;
        std::mem::swap(&mut in_batch, &mut out_batch);
    }
}
