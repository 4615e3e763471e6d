ARG E=
FROM reg.example/a:${E:-d}${U:-u}${E:+p}${U:+q}
