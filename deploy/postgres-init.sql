-- Extra databases on first start of the compose PostgreSQL (the `matloop` store database is POSTGRES_DB).
CREATE DATABASE prefect;
CREATE DATABASE mlflow;
