"""Tools that work with site data outside the Flink job: the fleet simulator, site bundles, the offline
replay of the engine and the scorer (none of it is the pure cycle logic, which is state_machine/)."""
