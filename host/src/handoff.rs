//! State handoff across a hot swap.
//!
//! A plugin of any world may export `wasmplug:plugin/handoff@1.0.0`
//! (`wit/plugin.wit`): `snapshot() -> list<u8>` and
//! `restore(state: list<u8>) -> result<_, string>`. It is found by name on
//! the live instance, so no world has to declare it. When the version being
//! replaced and its replacement both export it, the [`Registry`] carries the
//! serving instance's state over; a `restore` error refuses the swap.
//!
//! [`Registry`]: crate::Registry

use wasmtime::component::TypedFunc;

use crate::error::Result;
use crate::runtime::block_on;
use crate::{Instance, World};

/// The handoff interface, by its full name.
pub const HANDOFF: &str = "wasmplug:plugin/handoff@1.0.0";

type Snapshot = TypedFunc<(), (Vec<u8>,)>;

impl<W: World> Instance<W> {
    /// True when the plugin exports the handoff interface.
    pub fn supports_handoff(&mut self) -> bool {
        self.handoff_func("snapshot").is_some() && self.handoff_func("restore").is_some()
    }

    /// This instance's state, from the guest's `handoff.snapshot`; `None`
    /// when the plugin does not export the handoff interface.
    ///
    /// # Errors
    /// [`Error::BadCall`] when the plugin does not export the handoff interface
    /// or exports it with the wrong type; [`Error::Trap`] when the guest traps.
    pub fn snapshot(&mut self) -> Result<Option<Vec<u8>>> {
        let Some(index) = self.handoff_func("snapshot") else {
            return Ok(None);
        };
        let func: Snapshot = self.typed(&index, "snapshot")?;
        if W::ASYNC {
            // A swap is a blocking call, also for an async world.
            return block_on(self.call_async(move |_, store| {
                Box::pin(
                    async move { func.call_async(store, ()).await.map(|(state,)| Some(state)) },
                )
            }));
        }
        self.call(|_, store| func.call(store, ()).map(|(state,)| Some(state)))
    }

    /// Give this instance state from a [`snapshot`](Self::snapshot). The
    /// guest's refusal is [`Error::Guest`]; a plugin without the handoff
    /// interface refuses as [`Error::BadCall`].
    ///
    /// [`Error::Guest`]: crate::Error::Guest
    /// [`Error::BadCall`]: crate::Error::BadCall
    ///
    /// # Errors
    /// As [`snapshot`](Self::snapshot), and [`Error::Guest`] when the plugin
    /// refuses the state.
    pub fn restore(&mut self, state: &[u8]) -> Result<()> {
        let Some(index) = self.handoff_func("restore") else {
            return Err(self.bad_call(format!("the plugin does not export `{HANDOFF}`")));
        };
        if W::ASYNC {
            let func: TypedFunc<(Vec<u8>,), (Result<(), String>,)> =
                self.typed(&index, "restore")?;
            let state = state.to_vec();
            let refused = block_on(self.call_async(move |_, store| {
                Box::pin(async move { func.call_async(store, (state,)).await.map(|(r,)| r) })
            }))?;
            return refused.map_err(|message| self.plugin().guest_error(message));
        }
        let func: TypedFunc<(&[u8],), (Result<(), String>,)> = self.typed(&index, "restore")?;
        self.try_call(|_, store| func.call(store, (state,)).map(|(result,)| result))
    }

    fn handoff_func(&mut self, name: &str) -> Option<wasmtime::component::ComponentExportIndex> {
        let (instance, store) = self.raw_parts();
        let iface = instance.get_export_index(&mut *store, None, HANDOFF)?;
        instance.get_export_index(store, Some(&iface), name)
    }

    fn typed<P, R>(
        &mut self,
        index: &wasmtime::component::ComponentExportIndex,
        name: &str,
    ) -> Result<TypedFunc<P, R>>
    where
        P: wasmtime::component::ComponentNamedList + wasmtime::component::Lower,
        R: wasmtime::component::ComponentNamedList + wasmtime::component::Lift,
    {
        let (instance, store) = self.raw_parts();
        instance
            .get_typed_func::<P, R>(store, index)
            .map_err(|e| self.bad_call(format!("`{HANDOFF}#{name}` has the wrong type: {e:#}")))
    }
}
