//! The two macros every aggregate is written with, so that its module holds only what
//! is its own: the commands, the events, the errors, and two functions on its state.
//!
//! - `events!` declares an event enum with each event's type written once
//!   (`"tenant.provisioned" => Provisioned { … }`): it becomes the serde tag and what
//!   `event_type()` answers. Usage and audit records, appended without an aggregate,
//!   declare their events with it too.
//! - `aggregate!` makes a state a cqrs-es `Aggregate` from its `decide` (the command
//!   and the state → at most one event, or an error) and its `evolve` (an event
//!   applied to the state).

/// Declares an event enum: the enum (internally tagged by `type`), an
/// `event_type_name()` that gives each event's type, and its cqrs-es `DomainEvent`
/// impl (version `1`). Each event's type is written once, before its variant; a name
/// given before it (`RECORDED = "usage.recorded" => …`) also declares a public constant
/// of the module holding that type. Write the enum's own attributes (doc, derives)
/// before `pub enum`; `Serialize` and `Deserialize` must be among the derives.
macro_rules! events {
    (
        $(#[$meta:meta])*
        pub enum $event:ident {
            $(
                $(#[$variant_meta:meta])*
                $($constant:ident =)? $name:literal => $variant:ident $fields:tt
            ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[serde(tag = "type")]
        pub enum $event {
            $(
                $(#[$variant_meta])*
                #[serde(rename = $name)]
                $variant $fields,
            )*
        }

        $($(
            #[doc = concat!("The type of `", $name, "` events.")]
            pub const $constant: &str = $name;
        )?)*

        impl $event {
            /// The event's type: its serde tag (`type`) and its `event_type()`.
            pub fn event_type_name(&self) -> &'static str {
                match self {
                    $($event::$variant { .. } => $name,)*
                }
            }
        }

        impl ::cqrs_es::DomainEvent for $event {
            fn event_type(&self) -> String {
                self.event_type_name().to_string()
            }

            fn event_version(&self) -> String {
                "1".to_string()
            }
        }
    };
}

/// Makes `$state` a cqrs-es `Aggregate` (no services) named `TYPE` in the event store.
/// `$state` must have `fn decide(&self, command) -> Result<D, error>`, where `D` is
/// the event or an `Option` of it (`None`: the command changes nothing), and
/// `fn evolve(&mut self, event)`.
macro_rules! aggregate {
    ($state:ty {
        TYPE: $type_name:expr,
        command: $command:ty,
        event: $event:ty,
        error: $error:ty $(,)?
    }) => {
        impl ::cqrs_es::Aggregate for $state {
            const TYPE: &'static str = $type_name;
            type Command = $command;
            type Event = $event;
            type Error = $error;
            type Services = ();

            async fn handle(
                &mut self,
                command: $command,
                _services: &(),
                sink: &::cqrs_es::event_sink::EventSink<Self>,
            ) -> Result<(), $error> {
                let event: Option<$event> = self.decide(command)?.into();
                if let Some(event) = event {
                    sink.write(event, self).await;
                }
                Ok(())
            }

            fn apply(&mut self, event: $event) {
                self.evolve(event);
            }
        }
    };
}

pub(crate) use aggregate;
pub(crate) use events;
