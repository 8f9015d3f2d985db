//! Static per-CPU variables (Linux's `DEFINE_PER_CPU`): [`PerCpuVar`], the
//! [`define_per_cpu!`](crate::define_per_cpu) macro, and the [`Template`]
//! that [`setup_per_cpu_areas`](crate::setup_per_cpu_areas) copies into
//! every CPU's area.
//!
//! # Two ways to name the template
//!
//! - **The linker section** (`target_os = "none"`, or the `linker-section` feature): the macro places every
//!   variable in `.data..percpu`, and the kernel's linker script brackets the
//!   section with `__per_cpu_start` and `__per_cpu_end`, as Linux's does
//!   ([`Template::linker_section`]). A variable's template address is its
//!   per-CPU pointer; CPU `n`'s copy is at that address plus
//!   `__per_cpu_offset[n]`.
//! - **A registration list** (everywhere, the host included): the template is
//!   the list of variables handed to [`Template::from_vars`]. Set-up lays
//!   them out one after the other in the unit and keeps a table from each
//!   variable's address to its place; a per-CPU pointer is then the place
//!   itself (a template base of 0). Nothing global is kept, so many machines
//!   in one test binary each have their own areas. A variable missing from
//!   the list is refused ([`PercpuError::NotRegistered`](crate::PercpuError)).

use core::fmt;

use kmm_hal::PerCpu;

/// A static per-CPU variable: a template copy of a [`kmm_hal::PerCpu`] slot
/// — `local`, which only the owning CPU touches (through
/// [`get_cpu_var`](crate::PerCpuAreas::get_cpu_var)), and `shared`, which
/// any CPU may read (through [`per_cpu`](crate::PerCpuAreas::per_cpu)) and
/// which the this-CPU operations update when it is an atomic integer.
///
/// Made only by [`define_per_cpu!`](crate::define_per_cpu), in a `static`:
/// the template is never written, and every CPU's copy starts as a byte copy
/// of the constant initialiser — exactly what evaluating that constant once
/// per CPU would give. The copies are never dropped (a kernel's areas live
/// forever).
///
/// A copy is aligned because each area is page-aligned and the template
/// keeps every variable's alignment from a page-aligned start, so a
/// variable aligned to more than a page does not build:
///
/// ```compile_fail
/// #[repr(align(8192))]
/// struct Huge(u8);
/// kmm_percpu::define_per_cpu! {
///     static TOO_ALIGNED: Huge = Huge(0);
/// }
/// ```
#[repr(transparent)]
pub struct PerCpuVar<T, S = ()> {
    template: PerCpu<T, S>,
}

impl<T, S> PerCpuVar<T, S> {
    /// The template of a variable. Use [`define_per_cpu!`](crate::define_per_cpu).
    ///
    /// # Safety
    /// Only as the initialiser of a `static` (a constant): every CPU's copy
    /// is a byte copy of the template, which is only the same as a fresh
    /// value if the value is a constant, never written.
    #[doc(hidden)]
    pub const unsafe fn __new(local: T, shared: S) -> Self {
        const {
            assert!(
                align_of::<PerCpu<T, S>>() <= kmm_hal::PAGE_SIZE,
                "a per-CPU variable aligned to more than a page"
            )
        };
        PerCpuVar {
            template: PerCpu::new(local, shared),
        }
    }

    /// The variable as the registration list names it
    /// ([`Template::from_vars`]).
    pub fn desc(&'static self) -> VarDesc {
        VarDesc {
            addr: self.addr(),
            size: size_of::<PerCpu<T, S>>(),
            align: align_of::<PerCpu<T, S>>(),
        }
    }

    /// The address of the shared part in the template, as a number. With
    /// the kernel's linker-section template (`Template::linker_section`)
    /// this is the variable's per-CPU cookie: with a CPU's `%fs` base at
    /// its per-CPU offset, `%fs:` this address is that CPU's copy of the
    /// shared part. That is how an i386 kernel names per-CPU words it must
    /// reach before the areas exist (the CPU id and preemption count of
    /// `kmm_i386::I386SmpCpu`: `PerCpuWords`). Meaningless for a
    /// registration-list template, whose copies are laid out afresh.
    pub fn template_shared_addr(&'static self) -> usize {
        core::ptr::from_ref(self.template.shared()).addr()
    }

    /// The template's address.
    pub(crate) fn addr(&self) -> usize {
        core::ptr::from_ref(self).expose_provenance()
    }

    /// Where `shared` lies from the start of a copy.
    pub(crate) fn shared_offset(&self) -> usize {
        core::ptr::from_ref(self.template.shared()).addr() - self.addr()
    }
}

impl<T, S> fmt::Debug for PerCpuVar<T, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PerCpuVar")
            .field("template", &format_args!("{:#x}", self.addr()))
            .field("size", &size_of::<PerCpu<T, S>>())
            .finish()
    }
}

/// A static per-CPU variable in a registration list: its template's address,
/// size and alignment ([`PerCpuVar::desc`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VarDesc {
    pub(crate) addr: usize,
    pub(crate) size: usize,
    pub(crate) align: usize,
}

/// What [`setup_per_cpu_areas`](crate::setup_per_cpu_areas) copies into every
/// CPU's area: the linker section or a registration list (module docs).
#[derive(Debug, Clone, Copy)]
pub struct Template<'t> {
    pub(crate) kind: TemplateKind<'t>,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum TemplateKind<'t> {
    /// `[start, end)` of `.data..percpu`.
    Section { start: usize, end: usize },
    /// The registered variables.
    Vars(&'t [VarDesc]),
}

impl<'t> Template<'t> {
    /// A template of the variables in `vars` (in any order; a variable named
    /// twice is laid out once).
    pub const fn from_vars(vars: &'t [VarDesc]) -> Self {
        Template {
            kind: TemplateKind::Vars(vars),
        }
    }

    /// A template of the bytes `[start, end)`: the kernel's per-CPU section.
    ///
    /// # Safety
    /// `[start, end)` must be readable, hold only [`PerCpuVar`] statics made
    /// by [`define_per_cpu!`](crate::define_per_cpu) (and padding), be
    /// aligned to a page at `start` (copies keep a variable's alignment only
    /// if its offset from `start` does; variables are aligned to at most a
    /// page), and never be written.
    pub unsafe fn from_section(start: *const u8, end: *const u8) -> Self {
        Template {
            kind: TemplateKind::Section {
                // Copies are read back through this address.
                start: start.expose_provenance(),
                end: end.addr(),
            },
        }
    }

    /// The template between the linker script's `__per_cpu_start` and
    /// `__per_cpu_end` (docs/percpu.md shows the lines).
    #[cfg(any(target_os = "none", feature = "linker-section"))]
    pub fn linker_section() -> Template<'static> {
        unsafe extern "C" {
            static __per_cpu_start: u8;
            static __per_cpu_end: u8;
        }
        // SAFETY: the linker script brackets `.data..percpu`, where only
        // `define_per_cpu!` places anything, with these symbols, aligned to a
        // page; nothing writes the section after boot.
        unsafe {
            Template::from_section(
                core::ptr::addr_of!(__per_cpu_start),
                core::ptr::addr_of!(__per_cpu_end),
            )
        }
    }
}

/// Defines static per-CPU variables (Linux's `DEFINE_PER_CPU`).
///
/// ```
/// use core::sync::atomic::AtomicU32;
/// kmm_percpu::define_per_cpu! {
///     /// Calls on this CPU: only this CPU writes it, any CPU may read it.
///     pub static HITS: shared AtomicU32 = AtomicU32::new(0);
///     /// A CPU's private scratch list.
///     static SCRATCH: [u16; 8] = [0; 8];
///     /// Both: private state and counters others read.
///     static BOTH: u64 = 7, shared AtomicU32 = AtomicU32::new(0);
/// }
/// ```
///
/// Each item is a `static` of type [`PerCpuVar<T, S>`]: `T` is the local
/// part (`()` for `shared` items), `S` the shared part (`()` when none is
/// given). Initialisers are constants. On `target_os = "none"` (or with the
/// `linker-section` feature) the statics
/// go to the `.data..percpu` section; elsewhere list them with
/// [`PerCpuVar::desc`] in [`Template::from_vars`].
#[macro_export]
macro_rules! define_per_cpu {
    () => {};
    ($(#[$m:meta])* $vis:vis static $name:ident : shared $s:ty = $sinit:expr ; $($rest:tt)*) => {
        $crate::__percpu_static! {
            $(#[$m])*
            $vis static $name: $crate::PerCpuVar<(), $s> =
                // SAFETY: a static's initialiser: a constant, never written.
                unsafe { $crate::PerCpuVar::__new((), $sinit) };
        }
        $crate::define_per_cpu!($($rest)*);
    };
    ($(#[$m:meta])* $vis:vis static $name:ident : $t:ty = $init:expr , shared $s:ty = $sinit:expr ; $($rest:tt)*) => {
        $crate::__percpu_static! {
            $(#[$m])*
            $vis static $name: $crate::PerCpuVar<$t, $s> =
                // SAFETY: a static's initialiser: a constant, never written.
                unsafe { $crate::PerCpuVar::__new($init, $sinit) };
        }
        $crate::define_per_cpu!($($rest)*);
    };
    ($(#[$m:meta])* $vis:vis static $name:ident : $t:ty = $init:expr ; $($rest:tt)*) => {
        $crate::__percpu_static! {
            $(#[$m])*
            $vis static $name: $crate::PerCpuVar<$t> =
                // SAFETY: a static's initialiser: a constant, never written.
                unsafe { $crate::PerCpuVar::__new($init, ()) };
        }
        $crate::define_per_cpu!($($rest)*);
    };
}

/// One `define_per_cpu!` static, in `.data..percpu` where the template is
/// the linker section (`target_os = "none"`, or the `linker-section`
/// feature: decided here, in this crate, whatever the caller's target).
#[cfg(any(target_os = "none", feature = "linker-section"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __percpu_static {
    ($(#[$m:meta])* $vis:vis static $name:ident : $ty:ty = $init:expr ;) => {
        $(#[$m])*
        #[unsafe(link_section = ".data..percpu")]
        $vis static $name: $ty = $init;
    };
}

/// One `define_per_cpu!` static, an ordinary `static` (a registration-list
/// template).
#[cfg(not(any(target_os = "none", feature = "linker-section")))]
#[doc(hidden)]
#[macro_export]
macro_rules! __percpu_static {
    ($(#[$m:meta])* $vis:vis static $name:ident : $ty:ty = $init:expr ;) => {
        $(#[$m])*
        $vis static $name: $ty = $init;
    };
}
