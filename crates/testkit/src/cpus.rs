//! Binding test threads to the mock's CPUs, shared by both kinds of machine.

use kmm_hal::Cpu;
use kmm_mock::{BindError, CpuBinding, MockCpu};

/// Binds the calling thread to CPU `id` until the binding is dropped.
/// Panics if it cannot (no such CPU, taken, or this thread is bound).
pub(crate) fn bind(cpu: &MockCpu, id: usize) -> CpuBinding {
    cpu.bind(id)
        .unwrap_or_else(|e| panic!("kmm-testkit: bind CPU {id}: {e}"))
}

/// Binds the calling thread to the first free CPU, unless it is bound
/// already (then `None`: it keeps its CPU).
pub(crate) fn bind_free(cpu: &MockCpu) -> Option<CpuBinding> {
    for id in 0..cpu.count() {
        match cpu.bind(id) {
            Ok(b) => return Some(b),
            Err(BindError::AlreadyBound) => return None,
            Err(_) => {}
        }
    }
    None
}
