//! What the route table says about each route, for the router and the OpenAPI document.

/// What a route's caller needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Public,
    Viewer,
    Operator,
    /// An operator token, or nothing when `[http] requests_public = true`.
    OperatorOrPublicForm,
    /// An operator token, or the requester's `key`.
    OperatorOrKey,
    /// The requester's `key` in the query.
    Key,
}

impl Access {
    pub fn describe(self) -> &'static str {
        match self {
            Access::Public => "public",
            Access::Viewer => "viewer",
            Access::Operator => "operator",
            Access::OperatorOrPublicForm => "operator (public when [http] requests_public = true)",
            Access::OperatorOrKey => "operator, or the requester's key",
            Access::Key => "the requester's key",
        }
    }
}

/// One route of the API.
pub struct RouteDef {
    pub method: &'static str,
    pub path: &'static str,
    pub id: &'static str,
    pub summary: &'static str,
    pub access: Access,
    /// Query parameters: (name, description).
    pub query: &'static [(&'static str, &'static str)],
    /// Request body schema name (components/schemas).
    pub body: Option<&'static str>,
    /// Success status and response schema name (or a content type for non-JSON answers).
    pub ok: (u16, &'static str),
}

pub const fn r(
    method: &'static str,
    path: &'static str,
    id: &'static str,
    summary: &'static str,
    access: Access,
) -> RouteDef {
    RouteDef {
        method,
        path,
        id,
        summary,
        access,
        query: &[],
        body: None,
        ok: (200, "Object"),
    }
}
