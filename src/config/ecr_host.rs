//! ECR registry host names (`<account>.dkr.ecr.<region>.amazonaws.com`): where an ECR
//! upstream's region and registry id default from.

/// `(account, region)` of an ECR registry host name (any port ignored), if it is one.
pub fn parse_ecr_host(host: &str) -> Option<(String, String)> {
    let host = host.split(':').next()?;
    let rest = host.strip_suffix(".amazonaws.com").or_else(|| host.strip_suffix(".amazonaws.com.cn"))?;
    let mut parts = rest.split('.');
    let account = parts.next()?;
    if parts.next()? != "dkr" {
        return None;
    }
    let svc = parts.next()?;
    if svc != "ecr" && svc != "ecr-fips" {
        return None;
    }
    let region = parts.next()?;
    if parts.next().is_some()
        || account.len() != 12
        || !account.bytes().all(|b| b.is_ascii_digit())
        || region.is_empty()
    {
        return None;
    }
    Some((account.to_string(), region.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_ecr_hosts() {
        assert_eq!(
            parse_ecr_host("123456789012.dkr.ecr.eu-west-1.amazonaws.com"),
            Some(("123456789012".into(), "eu-west-1".into()))
        );
        assert_eq!(
            parse_ecr_host("123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn"),
            Some(("123456789012".into(), "cn-north-1".into()))
        );
        assert_eq!(
            parse_ecr_host("123456789012.dkr.ecr-fips.us-east-1.amazonaws.com"),
            Some(("123456789012".into(), "us-east-1".into()))
        );
        for bad in [
            "public.ecr.aws",
            "12345.dkr.ecr.us-east-1.amazonaws.com",
            "123456789012.dkr.ecr.amazonaws.com",
            "x.dkr.ecr.us-east-1.amazonaws.com.evil.com",
        ] {
            assert_eq!(parse_ecr_host(bad), None, "{bad}");
        }
    }
}
