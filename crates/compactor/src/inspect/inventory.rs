//! What an instance holds: pending tasks by category and by scope, and a
//! check that every expected kind of resource has a cleanup.

use std::collections::BTreeMap;
use std::fmt;

use crate::{Category, Compactor};

/// The pending tasks of an instance, by category and by scope. Made by
/// [`ShutdownPlan::inventory`](super::ShutdownPlan::inventory).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
    tasks: usize,
    /// This instance's pending tasks' names.
    names: Vec<String>,
    by_category: BTreeMap<Category, usize>,
    scopes: BTreeMap<String, Inventory>,
}

impl Inventory {
    /// Pending tasks of this instance itself (a scope counts as one).
    pub fn tasks(&self) -> usize {
        self.tasks
    }

    /// This instance's pending tasks per category.
    pub fn by_category(&self) -> &BTreeMap<Category, usize> {
        &self.by_category
    }

    /// The inventory of each pending scope, by the scope's name.
    pub fn scopes(&self) -> &BTreeMap<String, Inventory> {
        &self.scopes
    }

    /// Pending tasks here and in every scope below, scopes themselves not
    /// counted.
    pub fn total(&self) -> usize {
        self.tasks - self.scopes.len() + self.scopes.values().map(Inventory::total).sum::<usize>()
    }

    /// Checks that each expected category or task name has a pending
    /// cleanup (here or in a scope), and returns those that do not, logging
    /// a warning for each. Take the inventory once the service has started,
    /// to catch a resource kind whose cleanup was forgotten.
    ///
    /// # Examples
    ///
    /// ```
    /// use compactor::inspect::Coverage;
    /// use compactor::{Category, Compactor};
    ///
    /// let c = Compactor::new();
    /// c.task("pool").category(Category::Database).register(|| async {}).unwrap();
    /// let missing = c.plan().inventory().validate_coverage([Coverage::from(Category::Database), Category::File.into(), "http".into()]);
    /// assert_eq!(missing, [Coverage::Category(Category::File), Coverage::Task("http".into())]);
    /// ```
    pub fn validate_coverage<T: Into<Coverage>>(
        &self,
        expected: impl IntoIterator<Item = T>,
    ) -> Vec<Coverage> {
        let missing: Vec<Coverage> = expected
            .into_iter()
            .map(Into::into)
            .filter(|want| !self.covers(want))
            .collect();
        for want in &missing {
            tracing::warn!(missing = %want, "no pending cleanup covers an expected resource");
        }
        missing
    }

    /// Whether a pending task here or in a scope below covers `want`.
    fn covers(&self, want: &Coverage) -> bool {
        let here = match want {
            Coverage::Category(c) => self.by_category.contains_key(c),
            Coverage::Task(name) => self.names.contains(name),
        };
        here || self.scopes.values().any(|scope| scope.covers(want))
    }
}

impl fmt::Display for Inventory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn write(inv: &Inventory, f: &mut fmt::Formatter<'_>, depth: usize) -> fmt::Result {
            let categories: Vec<String> = inv
                .by_category
                .iter()
                .map(|(c, n)| format!("{c} {n}"))
                .collect();
            writeln!(f, "{} pending ({})", inv.tasks, categories.join(", "))?;
            for (name, scope) in &inv.scopes {
                write!(f, "{:indent$}scope {name}: ", "", indent = 2 * (depth + 1))?;
                write(scope, f, depth + 1)?;
            }
            Ok(())
        }
        write(self, f, 0)
    }
}

/// Something expected to have a cleanup: any task of a category, or a task
/// by name. See [`Inventory::validate_coverage`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Coverage {
    /// At least one task of this category.
    Category(Category),
    /// A task with this name.
    Task(String),
}

impl From<Category> for Coverage {
    fn from(category: Category) -> Self {
        Coverage::Category(category)
    }
}

impl From<&str> for Coverage {
    fn from(name: &str) -> Self {
        Coverage::Task(name.to_owned())
    }
}

impl From<String> for Coverage {
    fn from(name: String) -> Self {
        Coverage::Task(name)
    }
}

impl fmt::Display for Coverage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Coverage::Category(c) => write!(f, "a cleanup of category `{c}`"),
            Coverage::Task(name) => write!(f, "a cleanup named `{name}`"),
        }
    }
}

impl Compactor {
    /// The pending tasks, by category and by scope (recursively): see
    /// [`ShutdownPlan::inventory`](super::ShutdownPlan::inventory).
    pub(crate) fn inventory(&self) -> Inventory {
        let mut inventory = Inventory::default();
        self.registry().for_each_pending(|name, category, scope| {
            inventory.tasks += 1;
            inventory.names.push(name.to_owned());
            *inventory.by_category.entry(category.clone()).or_insert(0) += 1;
            if let Some(scope) = scope.as_ref().and_then(|s| s.downcast_ref::<Compactor>()) {
                inventory.scopes.insert(name.to_owned(), scope.inventory());
            }
        });
        inventory
    }
}
