//! The pause between two attempts: doubling from a first pause up to a cap,
//! never past a deadline.

use std::time::Duration;

use tokio::time::Instant;

/// Doubling pauses, `first`, `2 × first`, … up to `cap`.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    first: Duration,
    cap: Duration,
}

impl Backoff {
    /// Pauses from `first` doubling up to `cap`.
    pub fn new(first: Duration, cap: Duration) -> Backoff {
        Backoff {
            next: first,
            first,
            cap,
        }
    }

    /// The next pause (and doubles the one after).
    pub fn next_pause(&mut self) -> Duration {
        let pause = self.next;
        self.next = (self.next * 2).min(self.cap);
        pause
    }

    /// Starts again from the first pause (after progress).
    pub fn reset(&mut self) {
        self.next = self.first;
    }

    /// Sleeps the next pause, or until `deadline` if that comes first.
    pub async fn wait(&mut self, deadline: Instant) {
        let pause = self.next_pause();
        tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let ms = Duration::from_millis;
        let mut backoff = Backoff::new(ms(50), ms(300));
        let pauses: Vec<_> = (0..5).map(|_| backoff.next_pause()).collect();
        assert_eq!(pauses, vec![ms(50), ms(100), ms(200), ms(300), ms(300)]);
        backoff.reset();
        assert_eq!(backoff.next_pause(), ms(50));
    }
}
