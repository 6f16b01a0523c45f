//! The dynamic world: for hosts that learn a plugin's interface at run time.
//!
//! [`Dynamic`] accepts any component whose imports the host can satisfy
//! (WASI, and the reference world's `host` interface) and requires no
//! particular exports. Calls go through [`Instance::call_dynamic`] with
//! `Val`s, or [`Instance::call_wave`] with WAVE text, the `wasmplug` CLI's
//! path. If the component exports the reference `lifecycle` interface, its
//! identity is read and its `init` is run exactly as for a typed world.
//!
//! [`Instance::call_dynamic`]: crate::Instance::call_dynamic
//! [`Instance::call_wave`]: crate::Instance::call_wave

use wasmtime::component::{Instance as RawInstance, InstancePre, Linker};
use wasmtime::Store;

use crate::reference::{self, WitIdentity, LIFECYCLE};
use crate::{Identity, State, World};

/// A world with no required exports. See the module docs.
pub struct Dynamic {
    instance: RawInstance,
}

impl Dynamic {
    /// The raw component instance, for lookups of its exports.
    pub fn instance(&self) -> &RawInstance {
        &self.instance
    }

    fn lifecycle_func<P, R>(
        &self,
        store: &mut Store<State<()>>,
        name: &str,
    ) -> wasmtime::Result<Option<wasmtime::component::TypedFunc<P, R>>>
    where
        P: wasmtime::component::ComponentNamedList + wasmtime::component::Lower,
        R: wasmtime::component::ComponentNamedList + wasmtime::component::Lift,
    {
        let Some(iface) = self.instance.get_export_index(&mut *store, None, LIFECYCLE) else {
            return Ok(None);
        };
        let Some(func) = self
            .instance
            .get_export_index(&mut *store, Some(&iface), name)
        else {
            return Ok(None);
        };
        self.instance.get_typed_func::<P, R>(store, &func).map(Some)
    }
}

impl World for Dynamic {
    type Data = ();
    type Indices = ();

    fn add_to_linker(linker: &mut Linker<State<()>>) -> wasmtime::Result<()> {
        reference::add_host_to_linker(linker)
    }

    fn indices(_pre: &InstancePre<State<()>>) -> wasmtime::Result<()> {
        Ok(())
    }

    fn load(_: &(), _: &mut Store<State<()>>, instance: &RawInstance) -> wasmtime::Result<Self> {
        Ok(Dynamic {
            instance: *instance,
        })
    }

    fn identity(&self, store: &mut Store<State<()>>) -> wasmtime::Result<Option<Identity>> {
        let Some(func) = self.lifecycle_func::<(), (WitIdentity,)>(store, "identity")? else {
            return Ok(None);
        };
        let (id,) = func.call(&mut *store, ())?;
        Identity::parse(&id.name, &id.version)
            .map(Some)
            .map_err(wasmtime::Error::from_anyhow)
    }

    fn init(&self, store: &mut Store<State<()>>) -> wasmtime::Result<Result<(), String>> {
        match self.lifecycle_func::<(), (Result<(), String>,)>(store, "init")? {
            Some(func) => Ok(func.call(store, ())?.0),
            None => Ok(Ok(())),
        }
    }
}
