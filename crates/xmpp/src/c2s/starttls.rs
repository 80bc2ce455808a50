//! STARTTLS (RFC 6120 §5).

use super::*;

impl Conn {
    pub(super) async fn starttls(&mut self) -> Result<(), End> {
        let reader = self.reader.take().ok_or(End::Lost)?;
        if reader.has_buffered() {
            // Data pipelined after <starttls/> would be processed as if it were encrypted.
            return Err(End::Error(
                StreamError::PolicyViolation,
                "data sent after <starttls/>".into(),
            ));
        }
        self.out.raw(&format!("<proceed xmlns='{NS_TLS}'/>"));
        self.out.flush().await?;
        let r = reader.into_inner();
        let w = std::mem::replace(
            &mut self.out.w,
            tokio::io::split(Box::new(tokio::io::empty()) as BoxIo).1,
        );
        let io = r.unsplit(w);
        let acc = self.shared.tls.clone();
        let tls = acc.accept(io).await.map_err(|e| {
            tracing::info!("TLS handshake failed: {e}");
            End::Lost
        })?;
        let (r, w) = tokio::io::split(Box::new(tls) as BoxIo);
        self.out.w = w;
        self.reader = Some(Box::new(StreamReader::new(r, self.shared.limits())));
        self.tls = true;
        Ok(())
    }
}
