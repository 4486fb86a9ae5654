//! Produces example orders to a Kafka topic for the queue-consumer example: `--count` orders over
//! `--customers` customers (the record key, so each customer's orders stay in one partition and in
//! sequence), `--discontinued N` of them for the SKU the function refuses until fixed.
//!
//!   orders-produce --bootstrap 127.0.0.1:9092 --topic orders --count 100 --customers 10 --discontinued 1

use rdkafka::producer::{FutureProducer, FutureRecord};

struct Args {
    bootstrap: String,
    topic: String,
    count: u64,
    customers: u64,
    discontinued: u64,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        bootstrap: "127.0.0.1:9092".into(),
        topic: "orders".into(),
        count: 100,
        customers: 10,
        discontinued: 0,
    };
    let mut words = std::env::args().skip(1);
    while let Some(flag) = words.next() {
        let value = words
            .next()
            .ok_or_else(|| format!("{flag} needs a value"))?;
        let number = || {
            value
                .parse::<u64>()
                .map_err(|_| format!("{flag} takes a whole number, not `{value}`"))
        };
        match flag.as_str() {
            "--bootstrap" => args.bootstrap = value.clone(),
            "--topic" => args.topic = value.clone(),
            "--count" => args.count = number()?,
            "--customers" => args.customers = number()?.max(1),
            "--discontinued" => args.discontinued = number()?,
            _ => {
                return Err(format!(
                    "unknown flag `{flag}`; use --bootstrap, --topic, --count, --customers, --discontinued"
                ));
            }
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = match parse() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("error: {message}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let producer: FutureProducer = match rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &args.bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .create()
    {
        Ok(producer) => producer,
        Err(error) => {
            eprintln!("error: connecting to Kafka at {}: {error}", args.bootstrap);
            return std::process::ExitCode::FAILURE;
        }
    };
    let mut seqs = vec![0u64; args.customers as usize];
    // Sends are pipelined (librdkafka batches them and, with idempotence, keeps each partition's
    // order); acknowledgements are awaited a window at a time.
    let mut pending = Vec::new();
    for index in 0..args.count {
        let customer = index % args.customers;
        seqs[customer as usize] += 1;
        // The discontinued orders come last of the first customers, so the rest flows around them.
        let sku = if index >= args.count.saturating_sub(args.discontinued) {
            "discontinued"
        } else {
            "widget"
        };
        let order = serde_json::json!({
            "order": format!("o-{index}"),
            "customer": format!("c-{customer}"),
            "seq": seqs[customer as usize],
            "sku": sku,
            "amount": 100 + index % 900,
        })
        .to_string();
        let key = format!("c-{customer}");
        let record = FutureRecord::to(&args.topic).key(&key).payload(&order);
        match producer.send_result(record) {
            Ok(delivery) => pending.push((index, delivery)),
            Err((error, _)) => {
                eprintln!("error: producing order {index} to {}: {error}", args.topic);
                return std::process::ExitCode::FAILURE;
            }
        }
        if pending.len() >= 1000 || index + 1 == args.count {
            for (index, delivery) in pending.drain(..) {
                match delivery.await {
                    Ok(Ok(_)) => {}
                    Ok(Err((error, _))) => {
                        eprintln!("error: producing order {index} to {}: {error}", args.topic);
                        return std::process::ExitCode::FAILURE;
                    }
                    Err(_) => {
                        eprintln!("error: producing order {index}: the producer stopped");
                        return std::process::ExitCode::FAILURE;
                    }
                }
            }
        }
    }
    println!(
        "produced {} orders for {} customers to {} ({} discontinued)",
        args.count, args.customers, args.topic, args.discontinued
    );
    std::process::ExitCode::SUCCESS
}
