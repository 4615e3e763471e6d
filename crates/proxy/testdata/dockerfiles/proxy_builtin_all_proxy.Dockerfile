FROM reg.example/a:x${all_proxy}
