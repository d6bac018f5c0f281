//! llama-server: the service-discovery server (registry, collector configs,
//! scraper into InfluxDB and the live matrix UI).
