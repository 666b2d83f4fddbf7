"""SQLite: schema, migrations, connections, read queries."""
