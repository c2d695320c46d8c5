//! Spin's variables API, both generations: `spin:variables@3.0.0` (an
//! `async func`) and `fermyon:spin/variables@2.0.0`. A guest reads its own
//! component's variables (`[component.NAME.variables]`), rendered at
//! startup; see [`crate::manifest::variables`].

use crate::contract::spin_apis::fermyon::spin2_0_0::variables as v2;
use crate::contract::spin_apis::spin::variables::variables as v3;
use crate::engine::HostState;
use crate::manifest::variables::check_name;
use wasmtime::component::{Accessor, HasSelf};

/// Why a variable has no value for the guest, in either generation's terms.
enum Missing {
    InvalidName(String),
    Undefined(String),
}

impl HostState {
    fn variable(&self, name: &str) -> Result<String, Missing> {
        check_name(name).map_err(Missing::InvalidName)?;
        self.sandbox.variable(name).map(str::to_owned).ok_or_else(|| {
            Missing::Undefined(format!(
                "component `{}` has no variable {name:?}; declare it in [component.{}.variables]",
                self.component, self.component
            ))
        })
    }
}

impl v3::Host for HostState {}

impl<T> v3::HostWithStore<T> for HasSelf<HostState> {
    async fn get(
        accessor: &Accessor<T, Self>,
        name: String,
    ) -> wasmtime::Result<Result<String, v3::Error>> {
        Ok(accessor.with(|mut access| {
            access.get().variable(&name).map_err(|e| match e {
                Missing::InvalidName(reason) => v3::Error::InvalidName(reason),
                Missing::Undefined(reason) => v3::Error::Undefined(reason),
            })
        }))
    }
}

impl v2::Host for HostState {
    async fn get(&mut self, name: String) -> wasmtime::Result<Result<String, v2::Error>> {
        Ok(self.variable(&name).map_err(|e| match e {
            Missing::InvalidName(reason) => v2::Error::InvalidName(reason),
            Missing::Undefined(reason) => v2::Error::Undefined(reason),
        }))
    }
}
