//! 32-byte secrets that zeroize on drop, compare in constant time and never
//! show their bytes in `Debug` (vodozemac's rule).

/// Defines a 32-byte secret type.
macro_rules! secret32 {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, zeroize::Zeroize, zeroize::ZeroizeOnDrop)]
        pub struct $name([u8; 32]);

        impl $name {
            /// Wraps secret bytes (from storage, a grant, a vector).
            pub fn from_bytes(bytes: [u8; 32]) -> Self {
                Self(bytes)
            }

            /// From a slice that must be exactly 32 bytes.
            pub fn from_slice(bytes: &[u8]) -> $crate::Result<Self> {
                <[u8; 32]>::try_from(bytes)
                    .map(Self)
                    .map_err(|_| $crate::Error::Malformed { what: stringify!($name) })
            }

            /// 32 fresh bytes from the operating system's generator.
            pub fn random() -> $crate::Result<Self> {
                let mut s = Self([0u8; 32]);
                $crate::random::fill(&mut s.0)?;
                Ok(s)
            }

            /// The secret bytes. Callers must not log or store them unencrypted.
            pub fn expose_secret(&self) -> &[u8; 32] {
                &self.0
            }
        }

        impl PartialEq for $name {
            fn eq(&self, other: &Self) -> bool {
                subtle::ConstantTimeEq::ct_eq(&self.0[..], &other.0[..]).into()
            }
        }
        impl Eq for $name {}

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(concat!(stringify!($name), "(<redacted>)"))
            }
        }
    };
}

pub(crate) use secret32;
