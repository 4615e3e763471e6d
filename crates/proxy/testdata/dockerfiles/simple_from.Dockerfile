FROM reg.example/app:1
