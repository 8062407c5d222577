"""Job life cycle in the database: create, start, record outputs, finish. No Prefect here."""
